package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"

	"github.com/autonode/autonode/sandbox/privileged"
)

// Containerd is a private containerd started by a test: its own root,
// state and socket, and only the plugins a probe needs (no CRI).
type Containerd struct {
	t        testing.TB
	bin, dir string
	config   string
	// Address is its socket.
	Address string
	cmd     *exec.Cmd
	exited  chan struct{}
}

// StartContainerd runs /usr/bin/containerd with its own root, state and
// socket in a temp folder, and a config that loads only what the probe
// needs (no CRI). It is killed in cleanup.
func StartContainerd(t testing.TB) *Containerd {
	t.Helper()
	privileged.Require(t, privileged.Root)
	bin, err := exec.LookPath("containerd")
	if err != nil {
		privileged.Missing(t, "containerd", err)
	}
	// os.MkdirTemp under /tmp rather than t.TempDir: a unix socket path must
	// stay under 108 bytes, and test names make t.TempDir long.
	dir, err := os.MkdirTemp("", "ctd")
	if err != nil {
		t.Fatal(err)
	}
	c := &Containerd{t: t, bin: bin, dir: dir, Address: filepath.Join(dir, "c.sock"), config: filepath.Join(dir, "config.toml")}
	cfg := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[debug]
  address = ""
[metrics]
  address = ""
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.Address, c.Address+".ttrpc")
	if err := os.WriteFile(c.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Stop()
		// Unmount anything the snapshotters left before removing the tree.
		_ = exec.Command("umount", "-R", filepath.Join(dir, "state")).Run()
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("removing %s: %v", dir, err)
		}
	})
	c.Start()
	return c
}

// Start starts it again after Stop, on the same socket and state.
func (c *Containerd) Start() {
	c.t.Helper()
	log, err := os.Create(filepath.Join(c.dir, "containerd.log"))
	if err != nil {
		c.t.Fatal(err)
	}
	defer log.Close()
	c.cmd = exec.Command(c.bin, "--config", c.config, "--log-level", "info")
	c.cmd.Stdout, c.cmd.Stderr = log, log
	if err := c.cmd.Start(); err != nil {
		c.t.Fatalf("starting %s: %v", c.bin, err)
	}
	c.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { _ = cmd.Wait(); close(exited) }(c.cmd, c.exited)
	// Wait until it answers; the deadline only turns a hang into a failure.
	deadline := time.Now().Add(60 * time.Second)
	for {
		if c.answers() {
			return
		}
		select {
		case <-c.exited:
			b, _ := os.ReadFile(filepath.Join(c.dir, "containerd.log"))
			c.t.Fatalf("containerd exited at start:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(c.dir, "containerd.log"))
			c.t.Fatalf("containerd at %s never answered:\n%s", c.Address, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *Containerd) answers() bool {
	if _, err := os.Stat(c.Address); err != nil {
		return false
	}
	cl, err := client.New(c.Address, client.WithTimeout(2*time.Second))
	if err != nil {
		return false
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = cl.Version(ctx)
	return err == nil
}

// Stop ends containerd (SIGTERM, then SIGKILL) and waits for it.
func (c *Containerd) Stop() {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
	c.cmd = nil
}
