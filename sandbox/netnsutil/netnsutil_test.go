package netnsutil_test

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/autonode/autonode/sandbox/netnsutil"
	"github.com/autonode/autonode/sandbox/privileged"
)

func TestNamedLifecycle(t *testing.T) {
	privileged.Require(t, privileged.NetAdmin)
	name := fmt.Sprintf("nsutil-test-%08x", rand.Uint32())
	t.Cleanup(func() { _ = netnsutil.DeleteNamed(name) })
	before, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()

	ns, err := netnsutil.NewNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if _, err := os.Stat(filepath.Join(netnsutil.RunDir, name)); err != nil {
		t.Fatalf("named netns not mounted: %v", err)
	}
	if ns.Equal(before) {
		t.Fatal("NewNamed returned the caller's namespace")
	}

	// A listener opened inside stays there: nothing in the host answers it.
	var ln net.Listener
	var inside netns.NsHandle
	if err := netnsutil.Do(ns, func() error {
		var err error
		inside, err = netns.Get()
		if err != nil {
			return err
		}
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	defer inside.Close()
	if !inside.Equal(ns) {
		t.Error("Do did not run fn in the namespace")
	}
	if conn, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		conn.Close()
		t.Errorf("a listener opened in the namespace answered from the host on %s", ln.Addr())
	}

	if err := netnsutil.DeleteNamed(name); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(netnsutil.RunDir, name)); !os.IsNotExist(err) {
		t.Errorf("netns file still there after DeleteNamed: %v", err)
	}
	if err := netnsutil.DeleteNamed(name); err != nil {
		t.Errorf("DeleteNamed of a gone namespace = %v, want nil", err)
	}
}

func TestDoReturnsFnError(t *testing.T) {
	privileged.Require(t, privileged.NetAdmin)
	ns, err := netnsutil.New()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	want := fmt.Errorf("boom")
	if err := netnsutil.Do(ns, func() error { return want }); err != want {
		t.Errorf("Do() = %v, want fn's error", err)
	}
}
