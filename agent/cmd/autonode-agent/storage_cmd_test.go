package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/autonode/autonode/agent/config"
	"github.com/autonode/autonode/sandbox/loopdev"
	"github.com/autonode/autonode/sandbox/privileged"
)

func runStorage(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), append([]string{"storage"}, args...), func(string) string { return "" }, &stdout, &stderr)
	return stdout.String(), err
}

// emptySysfs has a block folder with only the EBS root volume in it.
func emptySysfs(t *testing.T) string {
	t.Helper()
	sys := t.TempDir()
	dir := filepath.Join(sys, "block", "nvme0n1", "device")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "model"), []byte("Amazon Elastic Block Store\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return sys
}

func TestStorageSubcommandArguments(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state.json")
	disabled := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(disabled, []byte("storage:\n  instanceStore:\n    enabled: false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// At boot the kubeconfig is not there yet; setup must not care.
	noKubeconfig := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(noKubeconfig, []byte("kubernetes:\n  kubeconfig: /nonexistent/kubeconfig\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		out  string
		err  string
	}{
		{"no verb", nil, "", "want setup or verify"},
		{"unknown verb", []string{"format"}, "", `unknown command "format"`},
		{"help", []string{"--help"}, "", config.ErrHelp.Error()},
		{"bad filesystem", []string{"setup", "--filesystem", "zfs"}, "", "storage.instanceStore.filesystem"},
		{"bad bind", []string{"setup", "--bind", "/var/lib/kubelet:shared"}, "", `propagation "shared"`},
		{"relative device", []string{"verify", "--device", "nvme1n1"}, "", "must be absolute device paths"},
		{"force is setup's only", []string{"verify", "--force"}, "", "flag provided but not defined: -force"},
		{"stray argument", []string{"setup", "extra"}, "", "unexpected arguments: extra"},
		{"disabled", []string{"setup", "--config", disabled}, "disabled", ""},
		{"setup without disks", []string{"setup", "--sysfs-root", emptySysfs(t), "--state-file", state}, "none on this node; nothing to do", ""},
		{"setup before the kubeconfig exists", []string{"setup", "--config", noKubeconfig, "--sysfs-root", emptySysfs(t), "--state-file", state}, "none on this node; nothing to do", ""},
		{"verify without disks", []string{"verify", "--sysfs-root", emptySysfs(t), "--state-file", state}, "none on this node", ""},
		{"a device that is not one", []string{"setup", "--device", state, "--state-file", state}, "", "is not a block device"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runStorage(t, tt.args...)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("storage %q = %v, want an error containing %q", tt.args, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, tt.out) {
				t.Errorf("output %q lacks %q", out, tt.out)
			}
		})
	}
}

// TestPrivilegedStorageSubcommand runs `storage setup` and `storage verify`
// as the boot unit would, on a loop device, with a config file and flags.
func TestPrivilegedStorageSubcommand(t *testing.T) {
	privileged.Require(t, privileged.Root, privileged.Loop)
	if _, err := exec.LookPath("mkfs.xfs"); err != nil {
		privileged.Missing(t, "mkfs.xfs (xfsprogs)", err)
	}
	root := t.TempDir()
	dev := loopdev.New(t, 512<<20).Path
	t.Cleanup(func() { unmountAll(t, root) })
	cfg := filepath.Join(root, "agent.yaml")
	yaml := fmt.Sprintf("storage:\n  instanceStore:\n    devices: [%s]\n    mountPoint: %s/mnt/.ephemeral\n    statePath: %s/state.json\n    kubeletProcess: \"-\"\n",
		dev, root, root)
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	binds := []string{"--bind", root + "/var/lib/containerd", "--bind", root + "/var/lib/kubelet:rshared"}

	out, err := runStorage(t, append([]string{"verify", "--config", cfg}, binds...)...)
	if err == nil || !strings.Contains(err.Error(), "setup has not run") {
		t.Fatalf("verify before setup = %q, %v", out, err)
	}
	out, err = runStorage(t, append([]string{"setup", "--config", cfg}, binds...)...)
	if err != nil || !strings.Contains(out, "instance store: formatted (single of "+dev+": xfs on "+dev) {
		t.Fatalf("setup = %q, %v", out, err)
	}
	out, err = runStorage(t, append([]string{"verify", "--config", cfg}, binds...)...)
	if err != nil || !strings.Contains(out, "in place") {
		t.Fatalf("verify = %q, %v", out, err)
	}
	out, err = runStorage(t, append([]string{"setup", "--config", cfg}, binds...)...)
	if err != nil || !strings.Contains(out, "instance store: verified") {
		t.Fatalf("second setup = %q, %v", out, err)
	}
}

// unmountAll detaches every mount under root, deepest last-mounted first.
func unmountAll(t *testing.T, root string) {
	t.Helper()
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(root))
	if err != nil {
		t.Fatal(err)
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		if err := unix.Unmount(mounts[i].Mountpoint, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			t.Errorf("unmounting %s: %v", mounts[i].Mountpoint, err)
		}
	}
}
