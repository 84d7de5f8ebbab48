package repair

import (
	"context"
	"fmt"
	"sync"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
)

// Systemd restarts units and reboots through systemd's D-Bus API. It
// connects on first use, so an agent on a machine without D-Bus (a
// development box, a test) starts fine and fails only the repair itself.
type Systemd struct {
	mu   sync.Mutex
	conn *sddbus.Conn
}

// NewSystemd returns a Systemd that has not connected yet.
func NewSystemd() *Systemd { return &Systemd{} }

func (s *Systemd) connect(ctx context.Context) (*sddbus.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil && s.conn.Connected() {
		return s.conn, nil
	}
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
	conn, err := sddbus.NewSystemConnectionContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("connecting to systemd over D-Bus: %w", err)
	}
	s.conn = conn
	return conn, nil
}

// RestartUnit restarts name and waits for systemd's job to finish or ctx to
// end.
func (s *Systemd) RestartUnit(ctx context.Context, name string) error {
	conn, err := s.connect(ctx)
	if err != nil {
		return err
	}
	done := make(chan string, 1)
	if _, err := conn.RestartUnitContext(ctx, name, "replace", done); err != nil {
		return fmt.Errorf("restarting unit %s: %w", name, err)
	}
	select {
	case result := <-done:
		if result != "done" {
			return fmt.Errorf("restarting unit %s: job %s", name, result)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("restarting unit %s: %w", name, ctx.Err())
	}
}

// Reboot starts reboot.target, as systemctl reboot does; it returns once
// systemd has queued the job.
func (s *Systemd) Reboot(ctx context.Context) error {
	conn, err := s.connect(ctx)
	if err != nil {
		return err
	}
	if _, err := conn.StartUnitContext(ctx, "reboot.target", "replace-irreversibly", nil); err != nil {
		return fmt.Errorf("starting reboot.target: %w", err)
	}
	return nil
}

// Close drops the D-Bus connection, if any.
func (s *Systemd) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
}
