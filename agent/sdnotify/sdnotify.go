// Package sdnotify tells systemd about the agent's lifecycle through the
// sd_notify protocol (go-systemd's daemon package): READY=1 once every
// subsystem is ready, WATCHDOG=1 at half of WATCHDOG_USEC, STATUS= lines for
// `systemctl status`, and STOPPING=1 on shutdown. Outside systemd
// (NOTIFY_SOCKET unset) every call is a no-op.
package sdnotify

import (
	"context"
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends sd_notify messages.
type Notifier struct {
	Logger *slog.Logger
}

// Ready tells systemd that start-up finished.
func (n Notifier) Ready() { n.send(daemon.SdNotifyReady) }

// Stopping tells systemd that the agent is shutting down.
func (n Notifier) Stopping() { n.send(daemon.SdNotifyStopping) }

// Status sets the free-form status line that `systemctl status` shows.
func (n Notifier) Status(msg string) { n.send("STATUS=" + msg) }

func (n Notifier) send(state string) {
	sent, err := daemon.SdNotify(false, state)
	switch {
	case err != nil:
		n.Logger.Warn("sd_notify failed", "state", state, "err", err)
	case sent:
		n.Logger.Debug("sd_notify sent", "state", state)
	}
}

// RunWatchdog pings systemd's watchdog at half of WATCHDOG_USEC until ctx
// ends, but only while alive returns true, so that a wedged agent stops
// pinging and systemd restarts it. Without a watchdog it returns at once.
func (n Notifier) RunWatchdog(ctx context.Context, alive func() bool) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		n.Logger.Warn("systemd watchdog settings unreadable; not pinging", "err", err)
		return
	}
	if interval <= 0 {
		return
	}
	n.Logger.Info("systemd watchdog enabled", "interval", interval)
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		if alive() {
			n.send(daemon.SdNotifyWatchdog)
		} else {
			n.Logger.Error("agent main loop unresponsive; withholding watchdog ping")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
