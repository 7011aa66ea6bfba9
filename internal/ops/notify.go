package ops

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier tells systemd (Type=notify units) how the service is doing:
// when it is ready, what it is doing, when it stops, and, under
// WatchdogSec=, that it is still alive.
//
// Outside systemd (no NOTIFY_SOCKET in the environment) every method does
// nothing and returns nil. The zero value is ready to use and logs nothing.
type Notifier struct {
	log *slog.Logger
}

// NewNotifier returns a Notifier that reports watchdog trouble to log.
func NewNotifier(log *slog.Logger) *Notifier {
	return &Notifier{log: log}
}

// Enabled reports whether the process runs under a systemd that listens for
// notifications.
func (n *Notifier) Enabled() bool { return os.Getenv("NOTIFY_SOCKET") != "" }

// Ready tells systemd that start-up is complete, with status as the line
// systemctl status shows.
func (n *Notifier) Ready(status string) error {
	return n.send(daemon.SdNotifyReady + "\n" + statusLine(status))
}

// Status updates the line systemctl status shows.
func (n *Notifier) Status(status string) error {
	return n.send(statusLine(status))
}

// Stopping tells systemd that the service is shutting down, so a slow
// shutdown is not mistaken for a hang.
func (n *Notifier) Stopping() error {
	return n.send(daemon.SdNotifyStopping + "\n" + statusLine("stopping"))
}

// Watchdog keeps systemd's watchdog fed until ctx ends. Every half of the
// interval systemd asked for (WATCHDOG_USEC) it calls alive and sends
// WATCHDOG=1 only if alive returned true: a wedged bridge stops feeding the
// watchdog and systemd restarts it. alive may block; blocking counts as not
// alive. A nil alive is always alive.
//
// Watchdog returns at once if systemd set no watchdog for this process.
func (n *Notifier) Watchdog(ctx context.Context, alive func() bool) {
	if !n.Enabled() {
		return
	}
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		n.logger().Warn("systemd watchdog settings unreadable; not feeding the watchdog", "err", err)
		return
	}
	if interval <= 0 {
		return // no WatchdogSec=, or WATCHDOG_PID names another process
	}
	if alive == nil {
		alive = func() bool { return true }
	}
	log := n.logger()
	healthy, sendFailing := true, false
	feed := func() {
		if !alive() {
			if healthy {
				log.Error("bridge unresponsive: no longer feeding the systemd watchdog, expect a restart", "timeout", interval)
				healthy = false
			}
			return
		}
		if !healthy {
			log.Warn("bridge responsive again: feeding the systemd watchdog")
			healthy = true
		}
		if err := n.send(daemon.SdNotifyWatchdog); err != nil {
			if !sendFailing {
				log.Warn("feeding the systemd watchdog", "err", err)
			}
			sendFailing = true
		} else {
			sendFailing = false
		}
	}

	tick := time.NewTicker(interval / 2)
	defer tick.Stop()
	feed()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			feed()
		}
	}
}

func (n *Notifier) send(state string) error {
	// The environment stays set: later notifications need NOTIFY_SOCKET, and
	// the watchdog needs WATCHDOG_USEC.
	_, err := daemon.SdNotify(false, state)
	return err
}

func (n *Notifier) logger() *slog.Logger {
	if n.log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return n.log
}

// statusLine makes a STATUS= assignment of s; a newline would end it and
// start another assignment, so newlines become spaces.
func statusLine(s string) string {
	return "STATUS=" + strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s)
}
