package datapath

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/autonode/autonode/agent/policy/compute"
)

// Pod record flags (struct pod in bpf/policy.c). The programs read only the cookie; the flags serve Dump and Open.
const (
	podIsolatedIngress = 1
	podIsolatedEgress  = 2
	podAttachTC        = 4 // attached through the clsact fallback, not TCX
)

// Program installs r: it writes the new rules of both directions beside those in force and switches to them with
// one update of the pod record, so a packet sees either the old rules or the new ones, then attaches the programs
// to r.HostIf if they are not attached yet. Calling it again with the same rules writes nothing. An ErrUnsupported
// error leaves the previous rules in force; the caller must then program a deny.
func (d *Datapath) Program(ctx context.Context, r PodRules) error {
	if d.cfg.ReadOnly {
		return errReadOnly
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	pod := fmt.Sprintf("pod %s/%s on %s", r.Namespace, r.Name, r.HostIf)
	if r.HostIf == "" || len(r.HostIf) > 15 || len(r.Namespace) > 63 || len(r.Name) > 253 {
		return fmt.Errorf("%s: host veth, namespace or name empty or too long", pod)
	}
	var tries [2][]trieEntry
	for dir, rules := range map[Direction]compute.Direction{Ingress: r.Ingress, Egress: r.Egress} {
		t, err := buildTrie(rules)
		if err != nil {
			return fmt.Errorf("%s: %s rules: %w", pod, dir, err)
		}
		tries[dir] = t
	}
	link, err := netlink.LinkByName(r.HostIf)
	if err != nil {
		return fmt.Errorf("%s: finding host veth: %w", pod, err)
	}
	ifindex := uint32(link.Attrs().Index)

	d.mu.Lock()
	defer d.mu.Unlock()
	pods, err := d.pods()
	if err != nil {
		return fmt.Errorf("%s: %w", pod, err)
	}
	for idx, p := range pods {
		if idx != ifindex && cstring(p.HostIf[:]) == r.HostIf { // the veth was recreated under the same name
			if err := d.removeIfindex(idx, p); err != nil {
				return fmt.Errorf("%s: removing the state of its previous ifindex %d: %w", pod, idx, err)
			}
		}
	}
	rec, exists := pods[ifindex]
	if exists && cstring(rec.HostIf[:]) != r.HostIf { // a new veth got the index of a deleted one
		if err := d.removeIfindex(ifindex, rec); err != nil {
			return fmt.Errorf("%s: %w", pod, err)
		}
		exists = false
	}
	if !exists {
		rec = policyPod{}
		var b [8]byte
		_, _ = rand.Read(b[:]) // never fails on Linux
		rec.Cookie = binary.LittleEndian.Uint64(b[:]) | 1
	}
	// The new rules go into the versions not in force, and the pod record that flips both directions to them goes
	// in after, before the programs are attached: no program ever runs for this pod without its rules.
	// Rules equal to those in force are left alone, so a resync rewrites nothing and keeps the flows' cached
	// verdicts.
	old, sig := rec.Ver, trieSignature(tries)
	changed := !exists || d.idx.sig[ifindex] != sig
	if changed {
		next, err := d.writeRules(ifindex, old, tries)
		if err != nil {
			return fmt.Errorf("%s: %w", pod, err)
		}
		rec.Ver = next
		rec.Gen[0]++
		rec.Gen[1]++
	}
	rec.Flags &= podAttachTC
	if r.Ingress.Isolated {
		rec.Flags |= podIsolatedIngress
	}
	if r.Egress.Isolated {
		rec.Flags |= podIsolatedEgress
	}
	rec.Family, rec.Ip = 0, [16]byte{}
	if r.IP.IsValid() {
		rec.Family = 4
		if r.IP.Is6() && !r.IP.Is4In6() {
			rec.Family = 6
		}
		ip := r.IP.Unmap()
		copy(rec.Ip[:], ip.AsSlice())
	}
	rec.HostIf, rec.Ns, rec.Name = [16]int8{}, [64]int8{}, [256]int8{}
	putCString(rec.HostIf[:], r.HostIf)
	putCString(rec.Ns[:], r.Namespace)
	putCString(rec.Name[:], r.Name)
	if err := d.objs.ApPods.Put(ifindex, rec); err != nil {
		return fmt.Errorf("%s: writing map ap_pods: %w", pod, err)
	}
	if changed {
		d.retire(ifindex, old)
		d.idx.sig[ifindex] = sig
	}
	tc, err := d.attach(r.HostIf, ifindex, exists && rec.Flags&podAttachTC != 0)
	if err != nil {
		return fmt.Errorf("%s: %w", pod, err)
	}
	if tc != (rec.Flags&podAttachTC != 0) {
		rec.Flags ^= podAttachTC
		if err := d.objs.ApPods.Put(ifindex, rec); err != nil {
			return fmt.Errorf("%s: writing map ap_pods: %w", pod, err)
		}
	}
	return nil
}

// pods reads every pod record, by ifindex.
func (d *Datapath) pods() (map[uint32]policyPod, error) {
	out := map[uint32]policyPod{}
	var k uint32
	var v policyPod
	it := d.objs.ApPods.Iterate()
	for it.Next(&k, &v) {
		out[k] = v
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading map ap_pods: %w", err)
	}
	return out, nil
}

// podByName finds the record of hostIf.
func (d *Datapath) podByName(hostIf string) (uint32, policyPod, error) {
	pods, err := d.pods()
	if err != nil {
		return 0, policyPod{}, err
	}
	for idx, p := range pods {
		if cstring(p.HostIf[:]) == hostIf {
			return idx, p, nil
		}
	}
	return 0, policyPod{}, fmt.Errorf("host veth %s: %w", hostIf, ErrNotFound)
}

// Remove detaches the programs from hostIf and deletes its rules, pod record and pins. Its conntrack and fragment
// entries die with the pod's cookie: no lookup matches them any more, and Run's sweep deletes them. Removing a pod
// that is not programmed is not an error.
func (d *Datapath) Remove(ctx context.Context, hostIf string) error {
	if d.cfg.ReadOnly {
		return errReadOnly
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	pods, err := d.pods()
	if err != nil {
		return fmt.Errorf("host veth %s: %w", hostIf, err)
	}
	var errs []error
	for idx, p := range pods {
		if cstring(p.HostIf[:]) == hostIf {
			errs = append(errs, d.removeIfindex(idx, p))
		}
	}
	errs = append(errs, d.unpinLinks(hostIf))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("removing host veth %s: %w", hostIf, err)
	}
	return nil
}

func (d *Datapath) removeIfindex(idx uint32, p policyPod) error {
	hostIf := cstring(p.HostIf[:])
	errs := []error{d.detach(hostIf, idx, p.Flags&podAttachTC != 0)}
	if err := d.objs.ApPods.Delete(idx); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		errs = append(errs, fmt.Errorf("deleting pod record of ifindex %d: %w", idx, err))
	}
	errs = append(errs, d.deleteRules(idx))
	return errors.Join(errs...)
}

// Reconcile removes every pod whose host veth is not in keep, and every link pin without a pod: the state a
// crashed agent or a missed CNI DEL leaves behind.
func (d *Datapath) Reconcile(ctx context.Context, keep []string) error {
	if d.cfg.ReadOnly {
		return errReadOnly
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	pods, err := d.pods()
	if err != nil {
		return err
	}
	var errs []error
	known := map[string]bool{}
	for idx, p := range pods {
		name := cstring(p.HostIf[:])
		if slices.Contains(keep, name) {
			known[name] = true
			continue
		}
		d.log.Info("removing stale policy state", "link", name, "ifindex", idx,
			"pod", cstring(p.Ns[:])+"/"+cstring(p.Name[:]))
		errs = append(errs, d.removeIfindex(idx, p))
	}
	for idx := range d.ruleIfindexes() {
		if _, ok := pods[idx]; !ok { // left by a Program that failed half-way
			errs = append(errs, d.deleteRules(idx))
		}
	}
	pins, err := d.linkPins()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, pin := range pins {
		if !known[pin.hostIf] {
			errs = append(errs, d.unpinLinks(pin.hostIf))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("reconciling policy pins: %w", err)
	}
	return nil
}

// SetNodeAddresses replaces the set of node addresses: traffic between them and any local pod always passes.
func (d *Datapath) SetNodeAddresses(ctx context.Context, addrs []netip.Addr) error {
	if d.cfg.ReadOnly {
		return errReadOnly
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	want := map[policyNodeKey]bool{}
	for _, a := range addrs {
		if !a.IsValid() {
			return fmt.Errorf("node address %v is invalid", a)
		}
		want[nodeKey(a)] = true
	}
	var stale []policyNodeKey
	var k policyNodeKey
	var v uint8
	it := d.objs.ApNodes.Iterate()
	for it.Next(&k, &v) {
		if !want[k] {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("reading map ap_nodes: %w", err)
	}
	for k := range want {
		if err := d.objs.ApNodes.Put(k, uint8(1)); err != nil {
			return fmt.Errorf("adding a node address to map ap_nodes: %w", err)
		}
	}
	for _, k := range stale {
		if err := d.objs.ApNodes.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("deleting a node address from map ap_nodes: %w", err)
		}
	}
	return nil
}

func nodeKey(a netip.Addr) policyNodeKey {
	a = a.Unmap()
	k := policyNodeKey{Family: 6}
	if a.Is4() {
		k.Family = 4
	}
	copy(k.Addr[:], a.AsSlice())
	return k
}

// Dump reads the rules of hostIf back from the maps. Entries are the effective ones: a prefix lists what it allows,
// including what it inherits from the prefixes that enclose it, so they equal, in effect, what was programmed.
func (d *Datapath) Dump(hostIf string) (PodRules, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	idx, p, err := d.podByName(hostIf)
	if err != nil {
		return PodRules{}, err
	}
	r := PodRules{HostIf: hostIf, Namespace: cstring(p.Ns[:]), Name: cstring(p.Name[:]), IP: podIP(p)}
	for _, dir := range []Direction{Ingress, Egress} {
		isolated := p.Flags&podIsolatedIngress != 0
		if dir == Egress {
			isolated = p.Flags&podIsolatedEgress != 0
		}
		var entries []compute.Entry
		if isolated {
			trie, err := d.readTrie(idx, dir, p.Ver[dir])
			if err != nil {
				return PodRules{}, fmt.Errorf("host veth %s: %s rules: %w", hostIf, dir, err)
			}
			if entries, err = decodeTrie(trie); err != nil {
				return PodRules{}, fmt.Errorf("host veth %s: %s rules: %w", hostIf, dir, err)
			}
		}
		cd := compute.Direction{Isolated: isolated, Entries: entries}
		if dir == Ingress {
			r.Ingress = cd
		} else {
			r.Egress = cd
		}
	}
	return r, nil
}

func podIP(p policyPod) netip.Addr {
	switch p.Family {
	case 4:
		return netip.AddrFrom4([4]byte(p.Ip[:4]))
	case 6:
		return netip.AddrFrom16(p.Ip)
	}
	return netip.Addr{}
}

func cstring(b []int8) string {
	u := make([]byte, len(b))
	for i, c := range b {
		u[i] = byte(c)
	}
	if i := bytes.IndexByte(u, 0); i >= 0 {
		u = u[:i]
	}
	return string(u)
}

func putCString(dst []int8, s string) {
	for i := 0; i < len(s) && i < len(dst)-1; i++ {
		dst[i] = int8(s[i])
	}
}
