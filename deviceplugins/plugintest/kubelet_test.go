package plugintest

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// TestRestartRemovesSockets checks that Restart, like a real kubelet, wipes
// every socket in the folder, leaves other files and serves kubelet.sock
// again.
func TestRestartRemovesSockets(t *testing.T) {
	dir := TempDir(t)
	k := NewKubelet(t, dir)

	plugin := filepath.Join(dir, "autonode-example.com_fake.sock")
	l, err := net.Listen("unix", plugin)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	defer func() { _ = l.Close() }()
	other := filepath.Join(dir, "checkpoint")
	if err := os.WriteFile(other, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}

	k.Restart(t)

	if _, err := os.Stat(plugin); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("plugin socket %s survived Restart: %v", plugin, err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("Restart removed %s, which is not a socket: %v", other, err)
	}
	if fi, err := os.Stat(k.Socket()); err != nil || fi.Mode()&fs.ModeSocket == 0 {
		t.Errorf("kubelet.sock not served again after Restart: %v", err)
	}
	if n := k.Registrations("example.com/fake"); n != 0 {
		t.Errorf("Registrations = %d with no plugin", n)
	}
}
