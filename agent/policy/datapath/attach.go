package datapath

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// hook is one of the two attach points on a host veth.
type hook struct {
	name     string // pin suffix: what the program checks, from the pod's side
	tcx      ebpf.AttachType
	tcParent uint32
}

func hooks() []hook {
	return []hook{
		{name: "from_pod", tcx: ebpf.AttachTCXIngress, tcParent: netlink.HANDLE_MIN_INGRESS},
		{name: "to_pod", tcx: ebpf.AttachTCXEgress, tcParent: netlink.HANDLE_MIN_EGRESS},
	}
}

func (d *Datapath) prog(h hook) *ebpf.Program {
	if h.name == "from_pod" {
		return d.objs.FromPod
	}
	return d.objs.ToPod
}

// tcPriority and tcHandle place our clsact filter first on a veth, and identify it for replacement.
const (
	tcPriority = 1
	tcHandle   = 0xa17
)

func (d *Datapath) linkPin(hostIf string, h hook) string {
	return filepath.Join(d.linksDir(), hostIf+"_"+h.name)
}

// attach makes sure both programs run on hostIf, and reports whether they use the clsact fallback. Existing TCX
// links of this ifindex are updated in place to the current programs; links pinned for a veth that is gone are
// replaced.
func (d *Datapath) attach(hostIf string, ifindex uint32, wasTC bool) (bool, error) {
	if wasTC || d.cfg.Attach == AttachTC {
		return true, d.attachTC(ifindex)
	}
	for i, h := range hooks() {
		err := d.attachTCX(hostIf, ifindex, h)
		if i == 0 && errors.Is(err, ebpf.ErrNotSupported) && d.cfg.Attach == AttachAuto {
			d.log.Info("TCX unsupported, attaching with a clsact qdisc", "link", hostIf)
			return true, d.attachTC(ifindex)
		}
		if err != nil {
			return false, err
		}
	}
	return false, nil
}

func (d *Datapath) attachTCX(hostIf string, ifindex uint32, h hook) error {
	pin := d.linkPin(hostIf, h)
	prog := d.prog(h)
	_, err := os.Stat(pin)
	stale := err == nil
	if stale {
		l, err := link.LoadPinnedLink(pin, nil)
		if err != nil {
			return fmt.Errorf("loading link pin %s: %w", pin, err)
		}
		current, err := d.updateLink(l, prog)
		l.Close()
		if err == nil && current == ifindex {
			return nil
		}
		// pinned for a veth that is gone, or unusable: replace it, attaching first
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: int(ifindex), Program: prog, Attach: h.tcx, Anchor: link.Head()})
	if err != nil {
		return fmt.Errorf("attaching %s program to %s with TCX: %w", h.name, hostIf, err)
	}
	defer l.Close()
	if stale {
		if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing stale link pin %s: %w", pin, err)
		}
	}
	if err := l.Pin(pin); err != nil {
		return fmt.Errorf("pinning link %s: %w", pin, err)
	}
	return nil
}

// updateLink switches a TCX link to prog when it runs another program, and returns the ifindex it is attached to
// (0 once its veth is gone).
func (d *Datapath) updateLink(l link.Link, prog *ebpf.Program) (uint32, error) {
	info, err := l.Info()
	if err != nil {
		return 0, fmt.Errorf("link info: %w", err)
	}
	tcx := info.TCX()
	if tcx == nil {
		return 0, fmt.Errorf("link %d is not a TCX link", info.ID)
	}
	pi, err := prog.Info()
	if err != nil {
		return 0, fmt.Errorf("program info: %w", err)
	}
	if id, _ := pi.ID(); id != info.Program && tcx.Ifindex != 0 {
		if err := l.Update(prog); err != nil {
			return 0, fmt.Errorf("updating link %d to program %d: %w", info.ID, id, err)
		}
	}
	return tcx.Ifindex, nil
}

// attachTC adds (or replaces in place) a direct-action filter on the veth's clsact qdisc for both hooks. A filter
// replacement swaps the program atomically.
func (d *Datapath) attachTC(ifindex uint32) error {
	q := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: int(ifindex), Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := netlink.QdiscAdd(q); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("adding clsact qdisc to ifindex %d: %w", ifindex, err)
	}
	for _, h := range hooks() {
		f := &netlink.BpfFilter{
			FilterAttrs: netlink.FilterAttrs{LinkIndex: int(ifindex), Parent: h.tcParent, Handle: tcHandle,
				Protocol: unix.ETH_P_ALL, Priority: tcPriority},
			Fd: d.prog(h).FD(), Name: "autonode-policy-" + h.name, DirectAction: true,
		}
		if err := netlink.FilterReplace(f); err != nil {
			return fmt.Errorf("attaching %s program to ifindex %d with a clsact filter: %w", h.name, ifindex, err)
		}
	}
	return nil
}

// detach removes the programs of hostIf: its TCX links (unpinning the last reference detaches them) or its clsact
// filters, when the veth still has that index and name.
func (d *Datapath) detach(hostIf string, ifindex uint32, tc bool) error {
	err := d.unpinLinks(hostIf)
	if !tc {
		return err
	}
	l, lerr := netlink.LinkByIndex(int(ifindex))
	if lerr != nil || l.Attrs().Name != hostIf {
		return err // gone with its veth
	}
	for _, h := range hooks() {
		f := &netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{LinkIndex: int(ifindex), Parent: h.tcParent,
			Handle: tcHandle, Protocol: unix.ETH_P_ALL, Priority: tcPriority}}
		if ferr := netlink.FilterDel(f); ferr != nil && !errors.Is(ferr, unix.ENOENT) {
			err = errors.Join(err, fmt.Errorf("deleting %s filter of %s: %w", h.name, hostIf, ferr))
		}
	}
	return err
}

// unpinLinks detaches and unpins the TCX links of hostIf. Detaching explicitly, rather than leaving it to the
// release of the last reference (which the kernel defers), lets the programs be attached again at once.
func (d *Datapath) unpinLinks(hostIf string) error {
	var errs []error
	for _, h := range hooks() {
		pin := d.linkPin(hostIf, h)
		if _, err := os.Stat(pin); err != nil {
			continue
		}
		if l, err := link.LoadPinnedLink(pin, nil); err == nil {
			// A link whose veth is gone is already detached; the error says so and changes nothing.
			_ = l.Detach()
			l.Close()
		}
		if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("removing link pin %s: %w", pin, err))
		}
	}
	return errors.Join(errs...)
}

type linkPinFile struct {
	hostIf string
	hook   hook
	path   string
}

// linkPins lists the link pins under the pin root.
func (d *Datapath) linkPins() ([]linkPinFile, error) {
	ents, err := os.ReadDir(d.linksDir())
	if err != nil {
		return nil, fmt.Errorf("listing link pins: %w", err)
	}
	var out []linkPinFile
	for _, e := range ents {
		for _, h := range hooks() {
			if name, ok := strings.CutSuffix(e.Name(), "_"+h.name); ok {
				out = append(out, linkPinFile{hostIf: name, hook: h, path: filepath.Join(d.linksDir(), e.Name())})
			}
		}
	}
	return out, nil
}

// adopt switches everything a previous run attached to this run's programs: pinned TCX links by an atomic link
// update, clsact filters by an in-place replacement. State that cannot be adopted (a veth that is gone) is left
// for Reconcile.
func (d *Datapath) adopt(ctx context.Context) error {
	pins, err := d.linkPins()
	if err != nil {
		return fmt.Errorf("policy datapath: %w", err)
	}
	updated := 0
	for _, p := range pins {
		if err := ctx.Err(); err != nil {
			return err
		}
		l, err := link.LoadPinnedLink(p.path, nil)
		if err != nil {
			d.log.Warn("cannot adopt link pin", "pin", p.path, "err", err)
			continue
		}
		ifindex, err := d.updateLink(l, d.prog(p.hook))
		l.Close()
		switch {
		case err != nil:
			d.log.Warn("cannot update pinned link", "pin", p.path, "err", err)
		case ifindex == 0:
			d.log.Info("pinned link outlived its veth", "pin", p.path)
		default:
			updated++
		}
	}
	pods, err := d.pods()
	if err != nil {
		return fmt.Errorf("policy datapath: %w", err)
	}
	tc := 0
	for idx, p := range pods {
		if p.Flags&podAttachTC == 0 {
			continue
		}
		if l, err := netlink.LinkByIndex(int(idx)); err != nil || l.Attrs().Name != cstring(p.HostIf[:]) {
			continue
		}
		if err := d.attachTC(idx); err != nil {
			d.log.Warn("cannot replace clsact filters", "link", cstring(p.HostIf[:]), "err", err)
			continue
		}
		tc++
	}
	d.log.Info("adopted pinned policy state", "pods", len(pods), "tcx_links", updated, "clsact_pods", tc)
	return nil
}
