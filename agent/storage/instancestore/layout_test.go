package instancestore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	ourXFS    = Signature{Type: "xfs", Label: Label, UUID: "fs-1"}
	member1   = Signature{Type: "linux_raid_member", Label: "ip-10-0-0-1:" + ArrayName, UUID: "md-1"}
	member2   = Signature{Type: "linux_raid_member", Label: ArrayName, UUID: "md-2"}
	foreignFS = Signature{Type: "ext4", Label: "data", UUID: "fs-9"}
)

// mdadmScript makes the fake runner act like mdadm and mkfs: create marks
// the members and leaves a blank array; mkfs labels its target.
func mdadmScript(f *fakeRunner, createErr error) {
	f.handle = func(name string, args []string) ([]byte, error) {
		switch {
		case name == "mdadm" && args[0] == "--assemble":
			writeFile(f.t, args[1], "") // the array's device node
		case name == "mdadm" && args[0] == "--create":
			if createErr != nil {
				return nil, createErr
			}
			writeFile(f.t, args[1], "")
			for _, d := range args[slices.IndexFunc(args, func(a string) bool { return strings.HasPrefix(a, "--raid-devices") })+1:] {
				f.set(d, member1)
			}
		case name == "wipefs":
			f.set(args[len(args)-1], Signature{})
		case strings.HasPrefix(name, "mkfs."):
			f.set(args[len(args)-1], Signature{Type: strings.TrimPrefix(name, "mkfs."), Label: Label, UUID: "fs-new"})
		}
		return nil, nil
	}
}

func TestMdadm(t *testing.T) {
	createFailed := &CommandError{Name: "mdadm", ExitCode: 1, Stderr: "mdadm: cannot open /dev/nvme2n1: Device or resource busy", Err: errors.New("exit status 1")}
	tests := []struct {
		name    string
		members func(disks []string) map[string]Signature
		array   *Signature // the array's signature once it is assembled
		holders []string   // md holder of each disk in sysfs, "" for none
		force   bool
		resume  bool // the state file says formatting these disks was interrupted
		create  error

		wantErr    error
		wantErrMsg string
		wantMdadm  func(array string, disks []string) [][]string
		wantWipe   func(disks []string) [][]string
		wantMkfs   bool
		wantTarget string // relative to the dev root
		wantNote   string
	}{
		{
			name:    "blank disks: create, then mkfs.xfs striped to match",
			members: func([]string) map[string]Signature { return nil },
			wantMdadm: func(array string, d []string) [][]string {
				return [][]string{{"--create", array, "--run", "--level=0", "--metadata=1.2", "--chunk=256", "--name=ephemeral", "--raid-devices=3", d[0], d[1], d[2]}}
			},
			wantMkfs: true, wantTarget: "md/ephemeral",
		},
		{
			name: "our members: assemble, keep the filesystem",
			members: func(d []string) map[string]Signature {
				return map[string]Signature{d[0]: member1, d[1]: member1, d[2]: member1}
			},
			array:      &ourXFS,
			wantMdadm:  func(array string, d []string) [][]string { return [][]string{{"--assemble", array, d[0], d[1], d[2]}} },
			wantTarget: "md/ephemeral",
		},
		{
			name: "already running (udev assembled it): use the holder, run no mdadm",
			members: func(d []string) map[string]Signature {
				return map[string]Signature{d[0]: member1, d[1]: member1, d[2]: member1}
			},
			holders:    []string{"md127", "md127", "md127"},
			array:      &ourXFS,
			wantTarget: "md127",
		},
		{
			name: "assembled array without a filesystem: make one",
			members: func(d []string) map[string]Signature {
				return map[string]Signature{d[0]: member1, d[1]: member1, d[2]: member1}
			},
			array:      &Signature{},
			wantMdadm:  func(array string, d []string) [][]string { return [][]string{{"--assemble", array, d[0], d[1], d[2]}} },
			wantMkfs:   true,
			wantTarget: "md/ephemeral",
			wantNote:   "holds no filesystem",
		},
		{
			name: "assembled array with a foreign filesystem: refused",
			members: func(d []string) map[string]Signature {
				return map[string]Signature{d[0]: member1, d[1]: member1, d[2]: member1}
			},
			array:      &foreignFS,
			wantMdadm:  func(array string, d []string) [][]string { return [][]string{{"--assemble", array, d[0], d[1], d[2]}} },
			wantErr:    ErrForeignData,
			wantErrMsg: `md array`,
		},
		{
			name: "our members held partly by a running array: refused",
			members: func(d []string) map[string]Signature {
				return map[string]Signature{d[0]: member1, d[1]: member1, d[2]: member1}
			},
			holders:    []string{"md127", "", "md127"},
			wantErr:    ErrHalfMade,
			wantErrMsg: "md127 holds only",
		},
		{
			name:       "a foreign filesystem on one disk: refused, nothing run",
			members:    func(d []string) map[string]Signature { return map[string]Signature{d[1]: foreignFS} },
			wantErr:    ErrForeignData,
			wantErrMsg: `nvme2n1 holds a ext4 signature labelled "data"`,
		},
		{
			name:       "a partition table: refused",
			members:    func(d []string) map[string]Signature { return map[string]Signature{d[2]: {PTType: "gpt"}} },
			wantErr:    ErrForeignData,
			wantErrMsg: "gpt partition table",
		},
		{
			name:     "a foreign filesystem with --force: wiped, then created",
			members:  func(d []string) map[string]Signature { return map[string]Signature{d[1]: foreignFS} },
			force:    true,
			wantWipe: func(d []string) [][]string { return [][]string{{"--all", d[1]}} },
			wantMdadm: func(array string, d []string) [][]string {
				return [][]string{{"--create", array, "--run", "--level=0", "--metadata=1.2", "--chunk=256", "--name=ephemeral", "--raid-devices=3", d[0], d[1], d[2]}}
			},
			wantMkfs: true, wantTarget: "md/ephemeral", wantNote: "--force",
		},
		{
			name:       "half-made (one member, two blank) with no state file: refused",
			members:    func(d []string) map[string]Signature { return map[string]Signature{d[0]: member1} },
			wantErr:    ErrHalfMade,
			wantErrMsg: "no interrupted setup explains them",
		},
		{
			name: "members of two different arrays: refused",
			members: func(d []string) map[string]Signature {
				return map[string]Signature{d[0]: member1, d[1]: member2, d[2]: member1}
			},
			wantErr:    ErrHalfMade,
			wantErrMsg: "nvme2n1 holds a linux_raid_member signature",
		},
		{
			name:     "half-made after an interrupted setup on these disks: resumed",
			members:  func(d []string) map[string]Signature { return map[string]Signature{d[0]: member1} },
			resume:   true,
			wantWipe: func(d []string) [][]string { return [][]string{{"--all", d[0]}} },
			wantMdadm: func(array string, d []string) [][]string {
				return [][]string{{"--create", array, "--run", "--level=0", "--metadata=1.2", "--chunk=256", "--name=ephemeral", "--raid-devices=3", d[0], d[1], d[2]}}
			},
			wantMkfs: true, wantTarget: "md/ephemeral", wantNote: "resuming the interrupted setup",
		},
		{
			name:       "mdadm --create fails: the error carries its message",
			members:    func([]string) map[string]Signature { return nil },
			create:     createFailed,
			wantErrMsg: "creating md array",
			wantMdadm: func(array string, d []string) [][]string {
				return [][]string{{"--create", array, "--run", "--level=0", "--metadata=1.2", "--chunk=256", "--name=ephemeral", "--raid-devices=3", d[0], d[1], d[2]}}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeRunner(t)
			s, disks := newTestSetup(t, 3, f, tt.force)
			array := filepath.Join(s.opts.DevRoot, "md", ArrayName)
			for d, sig := range tt.members(disks) {
				f.set(d, sig)
			}
			if tt.array != nil {
				f.set(array, *tt.array)
				f.set(filepath.Join(s.opts.DevRoot, "md127"), *tt.array)
			}
			for i, h := range tt.holders {
				if h != "" {
					writeFile(t, filepath.Join(s.opts.SysfsRoot, "class", "block", filepath.Base(disks[i]), "holders", h), "")
				}
			}
			mdadmScript(f, tt.create)
			var prev *State
			if tt.resume {
				prev = &State{Phase: PhaseFormatting, Devices: disks}
			}

			got, err := s.mdadm(context.Background(), disks, prev)

			var wantMdadm, wantWipe [][]string
			if tt.wantMdadm != nil {
				wantMdadm = tt.wantMdadm(array, disks)
			}
			if tt.wantWipe != nil {
				wantWipe = tt.wantWipe(disks)
			}
			if c := f.callsOf("mdadm"); !slices.EqualFunc(c, wantMdadm, slices.Equal) {
				t.Errorf("mdadm calls:\n got %q\nwant %q", c, wantMdadm)
			}
			if c := f.callsOf("wipefs"); !slices.EqualFunc(c, wantWipe, slices.Equal) {
				t.Errorf("wipefs calls:\n got %q\nwant %q", c, wantWipe)
			}
			if tt.wantErr != nil || tt.wantErrMsg != "" {
				if err == nil {
					t.Fatalf("mdadm() = %+v, want an error", got)
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Errorf("error %v is not %v", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErrMsg) {
					t.Errorf("error %q does not mention %q", err, tt.wantErrMsg)
				}
				if len(f.callsOf("mkfs.xfs")) > 0 {
					t.Errorf("mkfs ran despite the error: %q", f.callsOf("mkfs.xfs"))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(s.opts.DevRoot, tt.wantTarget); got.device != want {
				t.Errorf("target %s, want %s", got.device, want)
			}
			mkfs := f.callsOf("mkfs.xfs")
			if tt.wantMkfs {
				want := [][]string{{"-L", Label, "-d", "su=256k,sw=3", got.device}}
				if !slices.EqualFunc(mkfs, want, slices.Equal) {
					t.Errorf("mkfs.xfs calls %q, want %q", mkfs, want)
				}
				if !got.formatted {
					t.Error("target not marked formatted")
				}
			} else if len(mkfs) > 0 || got.formatted {
				t.Errorf("formatted an array that held our filesystem: %q", mkfs)
			}
			if tt.wantNote != "" && !hasNote(s.report.Notes, tt.wantNote) {
				t.Errorf("notes %q lack %q", s.report.Notes, tt.wantNote)
			}
		})
	}
}

// TestMdadmCreateFailureLeavesFormattingState: a create that fails leaves
// the state file saying formatting was under way on these disks, which is
// what lets the next setup resume over the partial array.
func TestMdadmCreateFailureLeavesFormattingState(t *testing.T) {
	f := newFakeRunner(t)
	s, disks := newTestSetup(t, 2, f, false)
	mdadmScript(f, errors.New("killed"))
	if _, err := s.mdadm(context.Background(), disks, nil); err == nil {
		t.Fatal("want an error")
	}
	st, err := ReadState(s.opts.StatePath)
	if err != nil {
		t.Fatal(err)
	}
	if st == nil || !st.interruptedOn(disks) {
		t.Fatalf("state %+v does not record formatting on %v", st, disks)
	}
}

// TestMissingToolsNamePackage: with no tools installed, each path's error
// names the package to install.
func TestMissingToolsNamePackage(t *testing.T) {
	empty := ExecRunner{Path: []string{t.TempDir()}}
	tests := []struct {
		name, fs string
		disks    int
		fake     []string // tools the fake answers; the rest go to the empty runner
		want     string
	}{
		{"blkid", "xfs", 1, nil, "blkid is not installed (searched " + empty.Path[0] + "): install the util-linux package"},
		{"mdadm", "xfs", 2, []string{"blkid"}, "install the mdadm package"},
		{"mkfs.xfs", "xfs", 1, []string{"blkid"}, "mkfs.xfs is not installed"},
		{"mkfs.xfs package", "xfs", 1, []string{"blkid"}, "install the xfsprogs package"},
		{"mkfs.ext4", "ext4", 1, []string{"blkid"}, "install the e2fsprogs package"},
		{"mkfs.btrfs", "btrfs", 2, []string{"blkid"}, "install the btrfs-progs package"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sysfs, dev, _ := fakeDisks(t, tt.disks)
			f := newFakeRunner(t)
			r := splitRunner{fake: f, fakeTools: tt.fake, rest: empty}
			_, err := Setup(context.Background(), Options{SysfsRoot: sysfs, DevRoot: dev, Filesystem: tt.fs, Runner: r,
				StatePath: filepath.Join(t.TempDir(), "state.json"), MountPoint: filepath.Join(t.TempDir(), "mnt")})
			var missing *MissingToolError
			if !errors.As(err, &missing) {
				t.Fatalf("Setup() = %v, want a *MissingToolError", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
		})
	}
}

// splitRunner sends some tools to a fake and the rest to another runner.
type splitRunner struct {
	fake      Runner
	fakeTools []string
	rest      Runner
}

func (r splitRunner) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	if slices.Contains(r.fakeTools, name) {
		return r.fake.Run(ctx, name, args...)
	}
	return r.rest.Run(ctx, name, args...)
}

func TestExecRunnerCommandError(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "blkid")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho probing >&2\nexit 2\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := ExecRunner{Path: []string{dir}}.Run(context.Background(), "blkid", "-p", "/dev/x")
	var ce *CommandError
	if !errors.As(err, &ce) || ce.ExitCode != 2 || !strings.Contains(err.Error(), "probing") {
		t.Fatalf("Run() = %v, want a CommandError with exit code 2 and the tool's stderr", err)
	}
	// probe reads exit code 2 as "nothing found".
	sig, err := probe(context.Background(), ExecRunner{Path: []string{dir}}, "/dev/x")
	if err != nil || !sig.Blank() {
		t.Fatalf("probe() = %+v, %v; want blank", sig, err)
	}
}

func TestMkfsCommand(t *testing.T) {
	tgt := target{device: "/dev/md/ephemeral", members: []string{"/dev/nvme1n1", "/dev/nvme2n1"}}
	tests := []struct {
		fs       string
		n, chunk int
		wantTool string
		wantArgs []string
	}{
		{"xfs", 1, 256, "mkfs.xfs", []string{"-L", Label, "/dev/md/ephemeral"}},
		{"xfs", 4, 256, "mkfs.xfs", []string{"-L", Label, "-d", "su=256k,sw=4", "/dev/md/ephemeral"}},
		{"xfs", 2, 64, "mkfs.xfs", []string{"-L", Label, "-d", "su=64k,sw=2", "/dev/md/ephemeral"}},
		{"ext4", 1, 256, "mkfs.ext4", []string{"-q", "-L", Label, "/dev/md/ephemeral"}},
		{"ext4", 2, 512, "mkfs.ext4", []string{"-q", "-L", Label, "-b", "4096", "-E", "stride=128,stripe_width=256", "/dev/md/ephemeral"}},
		{"btrfs", 2, 256, "mkfs.btrfs", []string{"-L", Label, "-d", "raid0", "-m", "raid0", "/dev/nvme1n1", "/dev/nvme2n1"}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s-%d-%d", tt.fs, tt.n, tt.chunk), func(t *testing.T) {
			tool, args := mkfsCommand(tt.fs, tgt, tt.n, tt.chunk)
			if tool != tt.wantTool || !slices.Equal(args, tt.wantArgs) {
				t.Errorf("mkfsCommand = %s %q, want %s %q", tool, args, tt.wantTool, tt.wantArgs)
			}
		})
	}
	tool, args := mkfsCommand("btrfs", target{members: []string{"/dev/a"}}, 1, 256)
	if tool != "mkfs.btrfs" || !slices.Equal(args, []string{"-L", Label, "/dev/a"}) {
		t.Errorf("one-disk btrfs: %s %q", tool, args)
	}
}

// TestSingleDecisions covers the one-disk choices that need no mount.
func TestSingleDecisions(t *testing.T) {
	tests := []struct {
		name     string
		sig      Signature
		force    bool
		resume   bool
		fs       string
		wantErr  error
		wantMkfs bool
		wantNote string
	}{
		{name: "blank: formatted", sig: Signature{}, wantMkfs: true},
		{name: "ours: kept", sig: ourXFS},
		{name: "ours but ext4 configured: kept with a note", sig: ourXFS, fs: "ext4", wantNote: "keeping the existing xfs"},
		{name: "ours but ext4 configured, --force: reformatted", sig: ourXFS, fs: "ext4", force: true, wantMkfs: true},
		{name: "ours after an interrupted format: made afresh", sig: ourXFS, resume: true, wantMkfs: true, wantNote: "may be incomplete"},
		{name: "foreign: refused", sig: foreignFS, wantErr: ErrForeignData},
		{name: "ambivalent: refused", sig: Signature{Ambivalent: true}, wantErr: ErrForeignData},
		{name: "foreign, --force: formatted", sig: foreignFS, force: true, wantMkfs: true, wantNote: "--force"},
		{name: "a lone array member: refused", sig: member1, wantErr: ErrHalfMade},
		{name: "a lone array member after an interrupted format: formatted", sig: member1, resume: true, wantMkfs: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeRunner(t)
			mdadmScript(f, nil)
			s, disks := newTestSetup(t, 1, f, tt.force)
			if tt.fs != "" {
				s.opts.Filesystem = tt.fs
			}
			f.set(disks[0], tt.sig)
			var prev *State
			if tt.resume {
				prev = &State{Phase: PhaseFormatting, Devices: disks, StartedAt: time.Now()}
			}
			got, err := s.single(context.Background(), disks[0], prev)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("single() = %+v, %v; want %v", got, err, tt.wantErr)
				}
				if len(f.callsOf("wipefs"))+len(f.callsOf("mkfs."+s.opts.Filesystem)) > 0 {
					t.Errorf("changed a refused disk: %q", f.calls)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			mkfs := f.callsOf("mkfs." + s.opts.Filesystem)
			if tt.wantMkfs != (len(mkfs) == 1) || got.formatted != tt.wantMkfs {
				t.Errorf("mkfs calls %q, formatted %v; want mkfs %v", mkfs, got.formatted, tt.wantMkfs)
			}
			if !tt.sig.Blank() && tt.wantMkfs && len(f.callsOf("wipefs")) != 1 {
				t.Errorf("old signature not wiped before mkfs: %q", f.calls)
			}
			if tt.wantNote != "" && !hasNote(s.report.Notes, tt.wantNote) {
				t.Errorf("notes %q lack %q", s.report.Notes, tt.wantNote)
			}
		})
	}
}
