// Package instancestore puts container images, pod ephemeral storage and
// pod logs on the instance's local NVMe disks.
//
// Setup runs once per boot, before containerd and the kubelet. It finds the
// instance-store disks, joins two or more into a RAID0 (mdadm, or btrfs's
// own), makes a filesystem labelled Label, mounts it at the mount point and
// bind-mounts a folder of it onto each configured path (/var/lib/containerd,
// /var/lib/kubelet, /var/log/pods), copying what the path held the first
// time. After a reboot it reassembles and remounts what it finds instead of
// formatting again.
//
// Setup formats only what it can prove is blank or its own: a blank disk,
// one carrying Label or our array's name, or what a state file says an
// interrupted earlier setup was formatting. Anything else (a foreign
// filesystem, a partition table) is refused unless Force is set.
//
// Verify, and the Verifier subsystem built on it, only check: the agent
// daemon may run beside the kubelet and must never mount under it.
package instancestore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Label is the filesystem label setup writes and looks for. XFS allows 12
// characters.
const Label = "autonode-eph"

// ArrayName is the md array's name, so it appears as /dev/md/ephemeral, as
// on Bottlerocket.
const ArrayName = "ephemeral"

// Bind is a folder bind-mounted from the instance store.
type Bind struct {
	Path string
	// Shared makes the bind rshared, as the kubelet's folder must be so
	// that the volumes it mounts reach containers; otherwise it is private.
	Shared bool
}

// dirName is the bind's folder on the instance store, named as Bottlerocket
// names it: /var/lib/kubelet is ._var_lib_kubelet.
func (b Bind) dirName() string { return "." + strings.ReplaceAll(b.Path, "/", "_") }

// Options configure Setup and Verify. Zero values take the defaults.
type Options struct {
	// Devices are the disks to use; empty discovers them under SysfsRoot.
	Devices []string
	// SysfsRoot, DevRoot and ProcRoot are where sysfs, /dev and /proc are.
	// Defaults are /sys, /dev and /proc.
	SysfsRoot, DevRoot, ProcRoot string
	// Filesystem is xfs (default), ext4 or btrfs.
	Filesystem string
	// RAIDChunkKiB is the md chunk size and the filesystem's stripe unit.
	// Default is 256.
	RAIDChunkKiB int
	// MountPoint is where the filesystem is mounted. Default is
	// /mnt/.ephemeral.
	MountPoint string
	// Binds are bind-mounted in path order, so a parent comes before a
	// folder inside it.
	Binds []Bind
	// StatePath is the state file (required).
	StatePath string
	// KubeletMarkers and KubeletProcess say the kubelet has started (see
	// kubeletStarted); setup then only verifies. KubeletProcess "" skips
	// the process check.
	KubeletMarkers []string
	KubeletProcess string
	// Force formats disks that hold foreign data.
	Force bool
	// Runner runs blkid, wipefs, mdadm and mkfs. Default is ExecRunner{}.
	Runner Runner
	Logger *slog.Logger
	// Now is the clock for the state file. Default is time.Now.
	Now func() time.Time
}

func (o *Options) setDefaults() error {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&o.SysfsRoot, "/sys")
	def(&o.DevRoot, "/dev")
	def(&o.ProcRoot, "/proc")
	def(&o.Filesystem, "xfs")
	def(&o.MountPoint, "/mnt/.ephemeral")
	if o.RAIDChunkKiB == 0 {
		o.RAIDChunkKiB = 256
	}
	if o.Runner == nil {
		o.Runner = ExecRunner{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	switch o.Filesystem {
	case "xfs", "ext4", "btrfs":
	default:
		return fmt.Errorf("filesystem %q: want xfs, ext4 or btrfs", o.Filesystem)
	}
	if o.StatePath == "" {
		return errors.New("no state file path")
	}
	if !filepath.IsAbs(o.MountPoint) || o.MountPoint == "/" {
		return fmt.Errorf("mount point %q: want an absolute path other than /", o.MountPoint)
	}
	o.MountPoint = filepath.Clean(o.MountPoint)
	o.Binds = slices.Clone(o.Binds) // cleaned and sorted below: not the caller's
	names := map[string]string{}
	for i, b := range o.Binds {
		if !filepath.IsAbs(b.Path) || b.Path == "/" {
			return fmt.Errorf("bind %q: want an absolute path other than /", b.Path)
		}
		o.Binds[i].Path = filepath.Clean(b.Path)
		b = o.Binds[i]
		if other, dup := names[b.dirName()]; dup {
			return fmt.Errorf("binds %s and %s would share the folder %s", other, b.Path, b.dirName())
		}
		names[b.dirName()] = b.Path
	}
	slices.SortFunc(o.Binds, func(a, b Bind) int { return strings.Compare(a.Path, b.Path) })
	return nil
}

// Action is what Setup did.
type Action string

// The actions.
const (
	ActionNone      Action = "none"      // no instance-store disks
	ActionVerified  Action = "verified"  // everything was already in place
	ActionMounted   Action = "mounted"   // an existing filesystem was mounted
	ActionFormatted Action = "formatted" // a new filesystem was made and mounted
)

// Report says what Setup did, for the log and the command's output.
type Report struct {
	Action     Action
	Layout     Layout
	Devices    []string
	Target     string
	Filesystem string
	// Notes are what a human should know: an interrupted setup that was
	// resumed, a filesystem kept although the configuration names another.
	Notes []string
}

// ErrForeignData means a disk holds data setup did not write. Nothing was
// changed; Force formats it.
var ErrForeignData = errors.New("holds data that is not ours")

// ErrHalfMade means the disks hold parts of our own layout that do not fit
// together (some disks ours, some blank, or two arrays), with no state file
// that explains them. Nothing was changed; Force formats them afresh.
var ErrHalfMade = errors.New("half-made layout")

// ErrKubeletStarted means the kubelet has started, so Setup only verified,
// and the verification failed.
var ErrKubeletStarted = errors.New("the kubelet has started")

// Setup prepares the instance store; see the package doc.
func Setup(ctx context.Context, opts Options) (*Report, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, fmt.Errorf("instance store: %w", err)
	}
	s := &setup{opts: opts, log: opts.Logger.With("component", "instance-store")}
	return s.run(ctx)
}

type setup struct {
	opts   Options
	log    *slog.Logger
	report Report
	state  *State
}

func (s *setup) note(msg string, args ...any) {
	text := fmt.Sprintf(msg, args...)
	s.log.Warn(text)
	s.report.Notes = append(s.report.Notes, text)
}

func (s *setup) run(ctx context.Context) (*Report, error) {
	o := s.opts
	started, why, err := kubeletStarted(o.KubeletMarkers, o.ProcRoot, o.KubeletProcess)
	if err != nil {
		return nil, err
	}
	if started {
		s.log.Info("the kubelet has started; only verifying", "why", why)
		res, err := Verify(ctx, o)
		if err != nil {
			return nil, fmt.Errorf("%w (%s), so setup only verifies, and the instance store is not in place: %w", ErrKubeletStarted, why, err)
		}
		return &Report{Action: ActionVerified, Layout: res.Layout, Devices: res.Devices, Target: res.Target, Filesystem: res.Filesystem}, nil
	}

	prev, err := ReadState(o.StatePath)
	if err != nil {
		// The disks, not the record, decide what is safe; a record that
		// cannot be read only loses us the interrupted-setup evidence.
		s.note("ignoring an unreadable state file: %v", err)
		prev = nil
	}
	devices, err := resolveDevices(o)
	if err != nil {
		return nil, err
	}
	s.report.Devices = devices
	if prev != nil && prev.Phase != PhaseDone {
		s.note("an earlier setup was interrupted while %s on %s (started %s, last updated %s)",
			prev.Phase, strings.Join(prev.Devices, ", "), prev.StartedAt.Format(time.RFC3339), prev.UpdatedAt.Format(time.RFC3339))
	}
	s.state = &State{Devices: devices, MountPoint: o.MountPoint, StartedAt: o.Now().UTC()}
	for _, b := range o.Binds {
		s.state.Binds = append(s.state.Binds, b.Path)
	}
	if len(devices) == 0 {
		s.log.Info("no instance-store disks; nothing to set up")
		s.report.Action, s.report.Layout = ActionNone, LayoutNone
		s.state.Phase, s.state.Layout = PhaseDone, LayoutNone
		s.state.MountPoint, s.state.Binds = "", nil
		return &s.report, writeState(o.StatePath, s.state, o.Now())
	}

	var tgt target
	switch {
	case o.Filesystem == "btrfs":
		tgt, err = s.btrfs(ctx, devices, prev)
	case len(devices) == 1:
		tgt, err = s.single(ctx, devices[0], prev)
	default:
		tgt, err = s.mdadm(ctx, devices, prev)
	}
	if err != nil {
		return nil, err
	}
	s.report.Layout, s.report.Target, s.report.Filesystem = tgt.layout, tgt.device, tgt.fsType
	s.state.Layout, s.state.Target, s.state.Filesystem, s.state.UUID = tgt.layout, tgt.device, tgt.fsType, tgt.uuid
	s.state.Formatted = tgt.formatted
	if tgt.formatted {
		s.report.Action = ActionFormatted
	} else {
		s.report.Action = ActionMounted
	}

	s.state.Phase = PhaseBinding
	if err := writeState(o.StatePath, s.state, o.Now()); err != nil {
		return nil, err
	}
	mountedNow, err := s.mount(tgt)
	if err != nil {
		return nil, err
	}
	bound, err := s.bindAll()
	if err != nil {
		return nil, err
	}
	if !mountedNow && bound == 0 && !tgt.formatted {
		s.report.Action = ActionVerified
	}
	s.state.Phase = PhaseDone
	if err := writeState(o.StatePath, s.state, o.Now()); err != nil {
		return nil, err
	}
	s.log.Info("instance store ready", "action", s.report.Action, "layout", tgt.layout, "device", tgt.device,
		"filesystem", tgt.fsType, "mountPoint", o.MountPoint)
	return &s.report, nil
}

// resolveDevices returns the configured disks, checked to be block
// devices, or the discovered ones.
func resolveDevices(o Options) ([]string, error) {
	if len(o.Devices) == 0 {
		return Discover(o.SysfsRoot, o.DevRoot)
	}
	for _, d := range o.Devices {
		fi, err := os.Stat(d)
		if err != nil {
			return nil, fmt.Errorf("configured device %s: %w", d, err)
		}
		if fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
			return nil, fmt.Errorf("configured device %s is not a block device", d)
		}
	}
	return slices.Clone(o.Devices), nil
}
