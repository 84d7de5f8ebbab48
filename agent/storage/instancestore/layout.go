package instancestore

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// target is the filesystem that setup mounts.
type target struct {
	layout    Layout
	device    string   // what is mounted: the disk, the array, or the first btrfs device
	members   []string // the disks under it
	fsType    string
	uuid      string
	formatted bool // made by this setup
}

// single handles one disk formatted whole.
func (s *setup) single(ctx context.Context, dev string, prev *State) (target, error) {
	sig, err := probe(ctx, s.opts.Runner, dev)
	if err != nil {
		return target{}, err
	}
	t := target{layout: LayoutSingle, device: dev, members: []string{dev}}
	switch classify(sig) {
	case kindOurFS:
		if prev.interruptedOn(t.members) {
			s.note("the filesystem on %s may be incomplete: an earlier setup was interrupted while making it; making it afresh", dev)
			return s.formatSingle(ctx, t, sig)
		}
		if sig.Type == "btrfs" {
			// A one-disk btrfs from the btrfs layout: mountable as it is.
			t.layout = LayoutBtrfs
		}
		if sig.Type != s.opts.Filesystem {
			if !s.opts.Force {
				s.note("keeping the existing %s filesystem on %s although %s is configured; --force formats it afresh",
					sig.Type, dev, s.opts.Filesystem)
				t.fsType, t.uuid = sig.Type, sig.UUID
				return t, nil
			}
			s.note("--force: formatting %s, which held our %s, as %s", dev, sig.Type, s.opts.Filesystem)
			t.layout = LayoutSingle
			return s.formatSingle(ctx, t, sig)
		}
		s.log.Info("found our filesystem; mounting it without formatting", "device", dev, "filesystem", sig.Type)
		t.fsType, t.uuid = sig.Type, sig.UUID
		return t, nil
	case kindBlank:
		return s.formatSingle(ctx, t, sig)
	case kindMember:
		if prev.interruptedOn([]string{dev}) || s.opts.Force {
			return s.formatSingle(ctx, t, sig)
		}
		return target{}, fmt.Errorf("%s holds a member of md array %s, but only this one disk is configured: %w; --force formats it afresh",
			dev, ArrayName, ErrHalfMade)
	default:
		if s.opts.Force {
			s.note("--force: formatting %s, which held %s", dev, sig)
			return s.formatSingle(ctx, t, sig)
		}
		return target{}, fmt.Errorf("%s %w: %s; not formatting it (--force would)", dev, ErrForeignData, sig)
	}
}

func (s *setup) formatSingle(ctx context.Context, t target, sig Signature) (target, error) {
	if err := s.beginFormat(ctx, t.members, []Signature{sig}); err != nil {
		return target{}, err
	}
	return s.mkfs(ctx, t, 1)
}

// btrfs handles one btrfs filesystem across every disk.
func (s *setup) btrfs(ctx context.Context, devices []string, prev *State) (target, error) {
	sigs, err := s.probeAll(ctx, devices)
	if err != nil {
		return target{}, err
	}
	t := target{layout: LayoutBtrfs, device: devices[0], members: devices}
	if uuid, ok := sameOurFS(sigs, "btrfs"); ok && !prev.interruptedOn(devices) {
		s.log.Info("found our btrfs on every disk; mounting it without formatting", "devices", devices)
		t.fsType, t.uuid = "btrfs", uuid
		return t, nil
	}
	if err := s.mayFormat(devices, sigs, prev, "a btrfs across the disks"); err != nil {
		return target{}, err
	}
	if err := s.beginFormat(ctx, devices, sigs); err != nil {
		return target{}, err
	}
	return s.mkfs(ctx, t, len(devices))
}

// mdadm handles an md RAID0 array of two disks or more.
func (s *setup) mdadm(ctx context.Context, devices []string, prev *State) (target, error) {
	sigs, err := s.probeAll(ctx, devices)
	if err != nil {
		return target{}, err
	}
	t := target{layout: LayoutMdadm, members: devices}
	if sameArray(sigs) {
		array, err := s.assemble(ctx, devices)
		if err != nil {
			return target{}, err
		}
		t.device = array
		return s.arrayFilesystem(ctx, t, prev.interruptedOn(devices))
	}
	if err := s.mayFormat(devices, sigs, prev, "an md RAID0 array of the disks"); err != nil {
		return target{}, err
	}
	if err := s.beginFormat(ctx, devices, sigs); err != nil {
		return target{}, err
	}
	t.device = filepath.Join(s.opts.DevRoot, "md", ArrayName)
	if _, err := s.opts.Runner.Run(ctx, "mdadm", mdadmCreateArgs(t.device, devices, s.opts.RAIDChunkKiB)...); err != nil {
		return target{}, fmt.Errorf("creating md array %s from %s: %w", t.device, strings.Join(devices, ", "), err)
	}
	s.log.Info("created md RAID0 array", "array", t.device, "devices", devices, "chunkKiB", s.opts.RAIDChunkKiB)
	return s.mkfs(ctx, t, len(devices))
}

// arrayFilesystem mounts the filesystem on an assembled array of ours, or
// makes one when the array holds none (an earlier setup stopped between
// creating the array and making the filesystem) or when interrupted says
// an earlier setup stopped while making it.
func (s *setup) arrayFilesystem(ctx context.Context, t target, interrupted bool) (target, error) {
	sig, err := probe(ctx, s.opts.Runner, t.device)
	if err != nil {
		return target{}, err
	}
	switch classify(sig) {
	case kindOurFS:
		if interrupted {
			s.note("the filesystem on %s may be incomplete: an earlier setup was interrupted while making it; making it afresh", t.device)
			break
		}
		if sig.Type != s.opts.Filesystem {
			if s.opts.Force {
				s.note("--force: formatting md array %s, which held our %s, as %s", t.device, sig.Type, s.opts.Filesystem)
				break
			}
			s.note("keeping the existing %s filesystem on %s although %s is configured; --force formats it afresh", sig.Type, t.device, s.opts.Filesystem)
		}
		s.log.Info("found our filesystem on the array; mounting it without formatting", "array", t.device, "filesystem", sig.Type)
		t.fsType, t.uuid = sig.Type, sig.UUID
		return t, nil
	case kindBlank:
		s.note("md array %s of our disks holds no filesystem (an earlier setup stopped before making it); making one", t.device)
	default:
		if !s.opts.Force {
			return target{}, fmt.Errorf("md array %s %w: %s; not formatting it (--force would)", t.device, ErrForeignData, sig)
		}
		s.note("--force: formatting md array %s, which held %s", t.device, sig)
	}
	if err := s.beginFormat(ctx, []string{t.device}, []Signature{sig}); err != nil {
		return target{}, err
	}
	return s.mkfs(ctx, t, len(t.members))
}

// assemble starts our array from its members, or finds it already started
// (udev's incremental assembly does that at boot) by the members' holder
// in sysfs, and returns its device.
func (s *setup) assemble(ctx context.Context, devices []string) (string, error) {
	holders := map[string][]string{}
	for _, d := range devices {
		hs, err := s.holders(d)
		if err != nil {
			return "", err
		}
		for _, h := range hs {
			holders[h] = append(holders[h], d)
		}
	}
	switch len(holders) {
	case 0:
		array := filepath.Join(s.opts.DevRoot, "md", ArrayName)
		if _, err := s.opts.Runner.Run(ctx, "mdadm", mdadmAssembleArgs(array, devices)...); err != nil {
			return "", fmt.Errorf("assembling md array %s from %s: %w", array, strings.Join(devices, ", "), err)
		}
		s.log.Info("assembled md array", "array", array, "devices", devices)
		return array, nil
	case 1:
		for h, held := range holders {
			if len(held) == len(devices) {
				s.log.Info("md array already running", "array", h, "devices", devices)
				return filepath.Join(s.opts.DevRoot, h), nil
			}
			return "", fmt.Errorf("md array %s holds only %s of %s: %w; stop it first", h, strings.Join(held, ", "), strings.Join(devices, ", "), ErrHalfMade)
		}
	}
	names := slices.Sorted(maps.Keys(holders))
	return "", fmt.Errorf("the disks %s are held by several devices (%s): %w", strings.Join(devices, ", "), strings.Join(names, ", "), ErrHalfMade)
}

// holders lists the devices (md arrays) built on dev, from sysfs.
func (s *setup) holders(dev string) ([]string, error) {
	real, err := filepath.EvalSymlinks(dev)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", dev, err)
	}
	dir := filepath.Join(s.opts.SysfsRoot, "class", "block", filepath.Base(real), "holders")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading holders of %s: %w", dev, err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out, nil
}

// mdadmCreateArgs are the arguments that create our RAID0 array. --run
// skips mdadm's confirmation question, which setup has already answered by
// probing every disk.
func mdadmCreateArgs(array string, devices []string, chunkKiB int) []string {
	args := []string{"--create", array, "--run", "--level=0", "--metadata=1.2",
		fmt.Sprintf("--chunk=%d", chunkKiB), "--name=" + ArrayName, fmt.Sprintf("--raid-devices=%d", len(devices))}
	return append(args, devices...)
}

func mdadmAssembleArgs(array string, devices []string) []string {
	return append([]string{"--assemble", array}, devices...)
}

// mkfsCommand returns the tool and arguments that make our filesystem on t,
// striped to match an array of n disks.
func mkfsCommand(fsType string, t target, n, chunkKiB int) (string, []string) {
	switch fsType {
	case "btrfs":
		args := []string{"-L", Label}
		if n > 1 {
			args = append(args, "-d", "raid0", "-m", "raid0")
		}
		return "mkfs.btrfs", append(args, t.members...)
	case "ext4":
		args := []string{"-q", "-L", Label}
		if n > 1 {
			// stride is the chunk in filesystem blocks; stripe_width a full
			// stripe across the disks.
			stride := chunkKiB / 4
			args = append(args, "-b", "4096", "-E", fmt.Sprintf("stride=%d,stripe_width=%d", stride, stride*n))
		}
		return "mkfs.ext4", append(args, t.device)
	default:
		args := []string{"-L", Label}
		if n > 1 {
			args = append(args, "-d", fmt.Sprintf("su=%dk,sw=%d", chunkKiB, n))
		}
		return "mkfs.xfs", append(args, t.device)
	}
}

// mkfs makes the filesystem and checks that blkid now sees it as ours.
func (s *setup) mkfs(ctx context.Context, t target, n int) (target, error) {
	tool, args := mkfsCommand(s.opts.Filesystem, t, n, s.opts.RAIDChunkKiB)
	s.log.Info("making filesystem", "tool", tool, "args", args)
	if _, err := s.opts.Runner.Run(ctx, tool, args...); err != nil {
		return target{}, fmt.Errorf("making %s on %s: %w", s.opts.Filesystem, t.device, err)
	}
	sig, err := probe(ctx, s.opts.Runner, t.device)
	if err != nil {
		return target{}, err
	}
	if classify(sig) != kindOurFS || sig.Type != s.opts.Filesystem {
		return target{}, fmt.Errorf("after %s, %s holds %s, not our %s", tool, t.device, sig, s.opts.Filesystem)
	}
	t.fsType, t.uuid, t.formatted = sig.Type, sig.UUID, true
	return t, nil
}

func (s *setup) probeAll(ctx context.Context, devices []string) ([]Signature, error) {
	sigs := make([]Signature, len(devices))
	for i, d := range devices {
		var err error
		if sigs[i], err = probe(ctx, s.opts.Runner, d); err != nil {
			return nil, err
		}
	}
	return sigs, nil
}

// mayFormat decides whether disks that are not (all) blank may be
// formatted: blank ones may; foreign data only with Force; parts of our own
// layout that do not fit together only with Force or when the state file
// says an interrupted setup was formatting these very disks.
func (s *setup) mayFormat(devices []string, sigs []Signature, prev *State, what string) error {
	var foreign, ours []string
	for i, sig := range sigs {
		switch classify(sig) {
		case kindForeign:
			foreign = append(foreign, fmt.Sprintf("%s holds %s", devices[i], sig))
		case kindOurFS, kindMember:
			ours = append(ours, fmt.Sprintf("%s holds %s", devices[i], sig))
		}
	}
	switch {
	case len(foreign) > 0 && !s.opts.Force:
		return fmt.Errorf("making %s: %w: %s; not formatting (--force would)", what, ErrForeignData, strings.Join(foreign, "; "))
	case len(foreign) > 0:
		s.note("--force: formatting disks with foreign data: %s", strings.Join(foreign, "; "))
	case len(ours) > 0 && prev.interruptedOn(devices):
		s.note("resuming the interrupted setup: formatting afresh over its partial work (%s)", strings.Join(ours, "; "))
	case len(ours) > 0 && s.opts.Force:
		s.note("--force: formatting afresh over a half-made layout (%s)", strings.Join(ours, "; "))
	case len(ours) > 0:
		return fmt.Errorf("making %s: %w: %s; these are ours but do not form the configured layout, and no interrupted setup explains them, so not formatting (--force would)",
			what, ErrHalfMade, strings.Join(ours, "; "))
	}
	return nil
}

// beginFormat records that formatting starts, checks that no disk is in
// use, and wipes the old signatures off those that have any (only ever
// after mayFormat or an explicit decision allowed it).
func (s *setup) beginFormat(ctx context.Context, devices []string, sigs []Signature) error {
	for _, d := range devices {
		if err := checkUnused(d); err != nil {
			return err
		}
	}
	s.state.Phase = PhaseFormatting
	if err := writeState(s.opts.StatePath, s.state, s.opts.Now()); err != nil {
		return err
	}
	for i, d := range devices {
		if sigs[i].Blank() {
			continue
		}
		if _, err := s.opts.Runner.Run(ctx, "wipefs", "--all", d); err != nil {
			return fmt.Errorf("wiping old signatures off %s: %w", d, err)
		}
	}
	return nil
}

// checkUnused opens dev exclusively, which the kernel refuses while it is
// mounted, part of a running array or held open exclusively by anyone.
func checkUnused(dev string) error {
	fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("%s is in use (mounted, in a running array, or held by another program); not formatting it", dev)
	}
	if err != nil {
		return fmt.Errorf("opening %s: %w", dev, err)
	}
	return unix.Close(fd)
}

// sameOurFS reports whether every signature is our filesystem of type
// fsType with one UUID, and returns it.
func sameOurFS(sigs []Signature, fsType string) (string, bool) {
	for _, s := range sigs {
		if classify(s) != kindOurFS || s.Type != fsType || s.UUID != sigs[0].UUID {
			return "", false
		}
	}
	return sigs[0].UUID, len(sigs) > 0
}

// sameArray reports whether every signature is a member of our array, all
// of one array UUID.
func sameArray(sigs []Signature) bool {
	for _, s := range sigs {
		if classify(s) != kindMember || s.UUID != sigs[0].UUID {
			return false
		}
	}
	return len(sigs) > 0
}
