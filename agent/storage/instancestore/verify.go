package instancestore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Checked is what Verify found in place.
type Checked struct {
	Layout     Layout
	Devices    []string
	Target     string
	Filesystem string
}

// ErrNotSetUp means the node has instance-store disks that setup has not
// (completely) prepared, or that are no longer mounted as it left them.
var ErrNotSetUp = errors.New("instance store not in place")

// Verify checks, without changing anything, that the instance store is set
// up as the state file says and as opts configure: the filesystem mounted at
// the mount point from the recorded device, and every bind in place with its
// propagation. A node without instance-store disks passes. Every error
// wraps ErrNotSetUp and names what is missing.
func Verify(_ context.Context, opts Options) (*Checked, error) {
	o := opts
	if err := o.setDefaults(); err != nil {
		return nil, fmt.Errorf("instance store: %w", err)
	}
	devices, err := resolveDevices(o)
	if err != nil {
		return nil, err
	}
	if len(devices) == 0 {
		return &Checked{Layout: LayoutNone}, nil
	}
	notSetUp := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrNotSetUp, fmt.Sprintf(format, args...))
	}
	st, err := ReadState(o.StatePath)
	switch {
	case err != nil:
		return nil, notSetUp("%v", err)
	case st == nil:
		return nil, notSetUp("the disks %s are here but setup has not run (no state file %s)", strings.Join(devices, ", "), o.StatePath)
	case st.Phase != PhaseDone:
		return nil, notSetUp("setup did not finish: it stopped while %s (state file %s)", st.Phase, o.StatePath)
	case st.Layout == LayoutNone:
		return nil, notSetUp("setup found no disks, but now there are: %s", strings.Join(devices, ", "))
	case !slices.Equal(st.Devices, devices):
		return nil, notSetUp("setup used %s, but the disks are now %s", strings.Join(st.Devices, ", "), strings.Join(devices, ", "))
	case st.MountPoint != o.MountPoint:
		return nil, notSetUp("setup mounted at %s, but %s is configured", st.MountPoint, o.MountPoint)
	}
	checked := &Checked{Layout: st.Layout, Devices: devices, Target: st.Target, Filesystem: st.Filesystem}

	mounts, err := readMounts(o.ProcRoot)
	if err != nil {
		return nil, err
	}
	eph := mountAt(mounts, o.MountPoint)
	t := target{device: st.Target, members: st.Devices, fsType: st.Filesystem}
	switch {
	case eph == nil:
		return nil, notSetUp("%s is not mounted", o.MountPoint)
	case !sourceMatches(eph.Source, t):
		return nil, notSetUp("%s is a mount of %s, not of %s", o.MountPoint, eph.Source, st.Target)
	case eph.FSType != st.Filesystem:
		return nil, notSetUp("%s holds %s, not %s", o.MountPoint, eph.FSType, st.Filesystem)
	case slices.Contains(strings.Split(eph.Options, ","), "ro") || slices.Contains(strings.Split(eph.VFSOptions, ","), "ro"):
		return nil, notSetUp("%s is mounted read-only", o.MountPoint)
	}
	var errs []error
	for _, b := range o.Binds {
		m := mountAt(mounts, b.Path)
		switch {
		case m == nil:
			errs = append(errs, notSetUp("%s is not bind-mounted from %s", b.Path, o.MountPoint))
		case !isOurBind(m, eph, b):
			errs = append(errs, notSetUp("%s is a mount of %s (root %s), not of %s/%s", b.Path, m.Source, m.Root, o.MountPoint, b.dirName()))
		case b.Shared && !shared(m):
			errs = append(errs, notSetUp("%s is bound but not shared (rshared), so volume mounts would not reach containers", b.Path))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return checked, nil
}
