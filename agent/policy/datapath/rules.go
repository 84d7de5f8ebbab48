package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// maxVersion is the largest rules version; versions wrap around within 0..maxVersion.
const maxVersion = 0x7f

// verKey names one version of one pod direction's rules.
type verKey struct {
	ifindex uint32
	dir     Direction
	ver     uint8
}

// retired is a version no longer in force, waiting for the grace period after the flip that retired it.
type retired struct {
	verKey
	epoch uint64 // the flip that retired it
	keys  []policyRuleKey
}

// ruleIndex is what the agent knows of ap_rules, so that it replaces and deletes a pod's entries without scanning
// the trie. Open rebuilds it from the trie. Guarded by Datapath.mu.
type ruleIndex struct {
	cur     map[verKey][]policyRuleKey // versions written and not retired (in force, or just written)
	sig     map[uint32]uint64          // by ifindex: trieSignature of the rules in force, once this run wrote them
	retired []retired
	epoch   uint64 // flips so far
	safe    uint64 // every flip up to this epoch is followed by a completed RCU grace period
	reaping bool   // a reaper goroutine is waiting for a grace period
}

// writeRules writes tries as the next version of each direction (cur is the versions in force) and returns them.
// Nothing a packet reads changes until the caller flips the pod record to them.
func (d *Datapath) writeRules(ifindex uint32, cur [2]uint8, tries [2][]trieEntry) ([2]uint8, error) {
	var next [2]uint8
	for dir := range tries {
		vk := verKey{ifindex: ifindex, dir: Direction(dir), ver: (cur[dir] + 1) & maxVersion}
		next[dir] = vk.ver
		// A version is reused after 127 flips; if it still waits for its grace period, wait for one now.
		if i := slices.IndexFunc(d.idx.retired, func(r retired) bool { return r.verKey == vk }); i >= 0 {
			if d.idx.retired[i].epoch > d.idx.safe {
				d.idx.safe = d.idx.epoch
				rcuBarrier()
			}
			if err := d.reap(); err != nil {
				return next, err
			}
		}
		if err := d.deleteKeys(d.idx.cur[vk]); err != nil { // left by a failed write
			return next, fmt.Errorf("%s rules: %w", Direction(dir), err)
		}
		keys := make([]policyRuleKey, 0, len(tries[dir]))
		for _, e := range tries[dir] {
			k := e.key.place(ifindex, Direction(dir), vk.ver)
			if err := d.objs.ApRules.Put(k, e.val); err != nil {
				d.idx.cur[vk] = keys
				return next, fmt.Errorf("%s rules: writing map ap_rules: %w", Direction(dir), err)
			}
			keys = append(keys, k)
		}
		d.idx.cur[vk] = keys
	}
	return next, nil
}

// retire queues the versions old of ifindex, just replaced, for deletion after the next RCU grace period.
func (d *Datapath) retire(ifindex uint32, old [2]uint8) {
	d.idx.epoch++
	for dir, ver := range old {
		vk := verKey{ifindex: ifindex, dir: Direction(dir), ver: ver}
		if keys, ok := d.idx.cur[vk]; ok {
			delete(d.idx.cur, vk)
			d.idx.retired = append(d.idx.retired, retired{verKey: vk, epoch: d.idx.epoch, keys: keys})
		}
	}
	d.startReaper()
}

// startReaper starts a goroutine that waits for a grace period, then deletes what was retired before it.
func (d *Datapath) startReaper() {
	if d.idx.reaping || len(d.idx.retired) == 0 {
		return
	}
	d.idx.reaping = true
	epoch := d.idx.epoch
	d.reaper.Add(1)
	go func() {
		defer d.reaper.Done()
		rcuBarrier()
		d.mu.Lock()
		defer d.mu.Unlock()
		d.idx.reaping = false
		d.idx.safe = max(d.idx.safe, epoch)
		if err := d.reap(); err != nil {
			d.log.Warn("deleting retired rules", "err", err)
		}
		d.startReaper()
	}()
}

// reap deletes the retired versions whose grace period is over.
func (d *Datapath) reap() error {
	var errs []error
	d.idx.retired = slices.DeleteFunc(d.idx.retired, func(r retired) bool {
		if r.epoch > d.idx.safe {
			return false
		}
		if err := d.deleteKeys(r.keys); err != nil {
			errs = append(errs, err)
			return false
		}
		return true
	})
	return errors.Join(errs...)
}

func (d *Datapath) deleteKeys(keys []policyRuleKey) error {
	for _, k := range keys {
		if err := d.objs.ApRules.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("deleting from map ap_rules: %w", err)
		}
	}
	return nil
}

// deleteRules drops every rule of ifindex at once, retired or not: its pod record is gone, so no packet needs them.
func (d *Datapath) deleteRules(ifindex uint32) error {
	delete(d.idx.sig, ifindex)
	var errs []error
	for vk, keys := range d.idx.cur {
		if vk.ifindex == ifindex {
			errs = append(errs, d.deleteKeys(keys))
			delete(d.idx.cur, vk)
		}
	}
	d.idx.retired = slices.DeleteFunc(d.idx.retired, func(r retired) bool {
		if r.ifindex != ifindex {
			return false
		}
		errs = append(errs, d.deleteKeys(r.keys))
		return true
	})
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("rules of ifindex %d: %w", ifindex, err)
	}
	return nil
}

// trieSignature hashes the tries of both directions, to tell whether Program changes anything.
func trieSignature(tries [2][]trieEntry) uint64 {
	h := fnv.New64a()
	for dir, t := range tries {
		fmt.Fprintf(h, "dir %d %d;", dir, len(t))
		for _, e := range t {
			_ = binary.Write(h, binary.LittleEndian, int64(e.key.bits))
			h.Write(e.key.data[:])
			_ = binary.Write(h, binary.LittleEndian, e.val)
		}
	}
	return h.Sum64()
}

// ruleIfindexes lists the ifindexes that have rules.
func (d *Datapath) ruleIfindexes() map[uint32]bool {
	out := map[uint32]bool{}
	for vk := range d.idx.cur {
		out[vk.ifindex] = true
	}
	for _, r := range d.idx.retired {
		out[r.ifindex] = true
	}
	return out
}

// ruleEntries counts the entries of ap_rules the agent knows.
func (d *Datapath) ruleEntries() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, keys := range d.idx.cur {
		n += len(keys)
	}
	for _, r := range d.idx.retired {
		n += len(r.keys)
	}
	return n
}

// readTrie reads one version of a pod direction's rules back from the trie.
func (d *Datapath) readTrie(ifindex uint32, dir Direction, ver uint8) ([]trieEntry, error) {
	keys := d.idx.cur[verKey{ifindex: ifindex, dir: dir, ver: ver}]
	out := make([]trieEntry, 0, len(keys))
	for _, k := range keys {
		var v policyRuleVal
		if err := d.objs.ApRules.Lookup(k, &v); err != nil {
			return nil, fmt.Errorf("reading map ap_rules: %w", err)
		}
		_, _, _, lk := unplace(k)
		out = append(out, trieEntry{key: lk, val: v})
	}
	return out, nil
}

// loadRuleKeys rebuilds the index at Open: versions in force stay current, every other one is retired (a
// previous run's leftovers) and deleted after the first grace period.
func (d *Datapath) loadRuleKeys() error {
	pods, err := d.pods()
	if err != nil {
		return err
	}
	found := map[verKey][]policyRuleKey{}
	var k policyRuleKey
	var v policyRuleVal
	it := d.objs.ApRules.Iterate()
	for it.Next(&k, &v) {
		ifindex, dir, ver, _ := unplace(k)
		vk := verKey{ifindex: ifindex, dir: dir, ver: ver}
		found[vk] = append(found[vk], k)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("reading map ap_rules: %w", err)
	}
	d.idx.epoch = 1
	for vk, keys := range found {
		if p, ok := pods[vk.ifindex]; ok && vk.dir <= Egress && p.Ver[vk.dir] == vk.ver {
			d.idx.cur[vk] = keys
			continue
		}
		if _, ok := pods[vk.ifindex]; ok {
			d.idx.retired = append(d.idx.retired, retired{verKey: vk, epoch: 1, keys: keys})
		} else {
			d.idx.cur[vk] = keys // no pod: Reconcile deletes them
		}
	}
	return nil
}

// rcuBarrier returns once every BPF program that was running when it was called has finished: membarrier's
// MEMBARRIER_CMD_GLOBAL is a synchronize_rcu(), and tc programs run inside RCU read-side sections. Where the kernel
// refuses it (nohz_full), a pause far longer than any program run stands in.
func rcuBarrier() {
	const membarrierCmdGlobal = 1
	if _, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, membarrierCmdGlobal, 0, 0); errno != 0 {
		unix.Nanosleep(&unix.Timespec{Nsec: 100_000_000}, nil)
	}
}
