package sdnotify

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// listen opens a real unixgram NOTIFY_SOCKET, as systemd does, and points
// the environment at it.
func listen(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return conn
}

func read(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("reading notify socket: %v", err)
	}
	return string(buf[:n])
}

func TestMessages(t *testing.T) {
	conn := listen(t)
	n := Notifier{Logger: slog.New(slog.DiscardHandler)}
	n.Ready()
	n.Status("3/3 subsystems ready")
	n.Stopping()
	for _, want := range []string{"READY=1", "STATUS=3/3 subsystems ready", "STOPPING=1"} {
		if got := read(t, conn); got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}

func TestWatchdogPingsOnlyWhileAlive(t *testing.T) {
	conn := listen(t)
	t.Setenv("WATCHDOG_USEC", strconv.Itoa(20_000)) // 20ms: pings every 10ms
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	var alive atomic.Bool
	alive.Store(true)
	var refusals atomic.Int32
	check := func() bool {
		if alive.Load() {
			return true
		}
		refusals.Add(1)
		return false
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		Notifier{Logger: slog.New(slog.DiscardHandler)}.RunWatchdog(ctx, check)
		close(done)
	}()
	for range 3 {
		if got := read(t, conn); got != "WATCHDOG=1" {
			t.Fatalf("got %q, want WATCHDOG=1", got)
		}
	}
	alive.Store(false)
	// Once the loop has refused twice, any ping still queued predates the
	// switch; after draining them, none may follow.
	deadline := time.Now().Add(10 * time.Second)
	for refusals.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the watchdog loop stopped asking whether the agent is alive")
		}
		time.Sleep(time.Millisecond)
	}
	buf := make([]byte, 64)
	for {
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		if _, err := conn.Read(buf); err != nil {
			break
		}
	}
	for refusals.Load() < 4 {
		if time.Now().After(deadline) {
			t.Fatal("the watchdog loop stopped asking whether the agent is alive")
		}
		time.Sleep(time.Millisecond)
	}
	_ = conn.SetReadDeadline(time.Now())
	if n, err := conn.Read(buf); err == nil {
		t.Fatalf("got %q while the agent was not alive, want no ping", buf[:n])
	}
	cancel()
	<-done
}

func TestWithoutSystemdIsNoop(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "")
	n := Notifier{Logger: slog.New(slog.DiscardHandler)}
	n.Ready()
	done := make(chan struct{})
	go func() { n.RunWatchdog(context.Background(), func() bool { return true }); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("RunWatchdog without WATCHDOG_USEC did not return")
	}
}
