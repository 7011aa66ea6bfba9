package ops

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
)

const deadline = 10 * time.Second

// notifySocket plays systemd: it listens on a unixgram socket named by
// NOTIFY_SOCKET and returns the datagrams it receives.
type notifySocket struct {
	path string
	got  chan string
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	// Socket paths are limited to about 100 bytes; t.TempDir can be longer.
	dir, err := os.MkdirTemp("", "sdnotify")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	s := &notifySocket{path: path, got: make(chan string)}
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop); conn.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			select {
			case s.got <- string(buf[:n]):
			case <-stop:
				return
			}
		}
	}()
	t.Setenv("NOTIFY_SOCKET", path)
	return s
}

// next returns the next datagram.
func (s *notifySocket) next(t *testing.T) string {
	t.Helper()
	select {
	case m := <-s.got:
		return m
	case <-time.After(deadline):
		t.Fatal("no notification arrived")
		return ""
	}
}

// mark sends a datagram of its own, so that reading up to it proves every
// notification sent before has been seen.
func (s *notifySocket) mark(t *testing.T, m string) {
	t.Helper()
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: s.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(m)); err != nil {
		t.Fatal(err)
	}
}

// until reads datagrams up to and including want and returns those before it.
func (s *notifySocket) until(t *testing.T, want string) []string {
	t.Helper()
	var before []string
	for {
		m := s.next(t)
		if m == want {
			return before
		}
		before = append(before, m)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, deadline, cond, "timed out waiting for %s", what)
}

func TestNotifierMessages(t *testing.T) {
	s := listenNotify(t)
	n := NewNotifier(nil)
	if !n.Enabled() {
		t.Fatal("not enabled with NOTIFY_SOCKET set")
	}
	for _, tc := range []struct {
		send func() error
		want string
	}{
		{func() error { return n.Ready("bridging radio and 2 rooms") }, "READY=1\nSTATUS=bridging radio and 2 rooms"},
		{func() error { return n.Status("radio down\nreconnecting") }, "STATUS=radio down reconnecting"},
		{n.Stopping, "STOPPING=1\nSTATUS=stopping"},
	} {
		if err := tc.send(); err != nil {
			t.Fatal(err)
		}
		if got := s.next(t); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}

func TestNotifierWithoutSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "1000")
	var n Notifier // the zero value works too
	if n.Enabled() {
		t.Error("enabled without NOTIFY_SOCKET")
	}
	for _, err := range []error{n.Ready("x"), n.Status("y"), n.Stopping()} {
		if err != nil {
			t.Error(err)
		}
	}
	returnsAtOnce(t, &n)
}

func TestWatchdogNotConfigured(t *testing.T) {
	for name, env := range map[string][2]string{
		"no WATCHDOG_USEC":  {"", ""},
		"another process":   {"1000", strconv.Itoa(os.Getpid() + 1)},
		"bad WATCHDOG_USEC": {"soon", ""},
	} {
		t.Run(name, func(t *testing.T) {
			s := listenNotify(t)
			t.Setenv("WATCHDOG_USEC", env[0])
			t.Setenv("WATCHDOG_PID", env[1])
			returnsAtOnce(t, NewNotifier(nil))
			s.mark(t, "MARK")
			if got := s.until(t, "MARK"); len(got) != 0 {
				t.Errorf("sent %q", got)
			}
		})
	}
}

// returnsAtOnce checks that Watchdog returns without its context ending.
func returnsAtOnce(t *testing.T, n *Notifier) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); n.Watchdog(ctx, nil) }()
	select {
	case <-done:
	case <-time.After(deadline):
		t.Fatal("Watchdog did not return without a watchdog configured")
	}
}

func TestWatchdog(t *testing.T) {
	s := listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "40000") // fed every 20 ms
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))

	var ok atomic.Bool
	var calls, refusals atomic.Int64
	ok.Store(true)
	alive := func() bool {
		calls.Add(1)
		if ok.Load() {
			return true
		}
		refusals.Add(1)
		return false
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); NewNotifier(nil).Watchdog(ctx, alive) }()

	for range 3 {
		if got := s.next(t); got != "WATCHDOG=1" {
			t.Fatalf("got %q, want WATCHDOG=1", got)
		}
	}

	// Wedged: once alive has said no, nothing more is sent. Every
	// notification sent before that first refusal is in the socket before
	// MARK1; between MARK1 and MARK2 alive keeps refusing.
	ok.Store(false)
	waitFor(t, "alive to be asked", func() bool { return refusals.Load() >= 1 })
	s.mark(t, "MARK1")
	for _, m := range s.until(t, "MARK1") {
		if m != "WATCHDOG=1" {
			t.Errorf("unexpected %q", m)
		}
	}
	r := refusals.Load()
	waitFor(t, "three more refusals", func() bool { return refusals.Load() >= r+3 })
	s.mark(t, "MARK2")
	if got := s.until(t, "MARK2"); len(got) != 0 {
		t.Errorf("sent %q while not alive", got)
	}

	// Unwedged: feeding resumes.
	ok.Store(true)
	if got := s.next(t); got != "WATCHDOG=1" {
		t.Fatalf("got %q after recovery, want WATCHDOG=1", got)
	}

	cancel()
	select {
	case <-done:
	case <-time.After(deadline):
		t.Fatal("Watchdog did not return when its context ended")
	}
	c := calls.Load()
	s.mark(t, "MARK3")
	for _, m := range s.until(t, "MARK3") {
		if !strings.HasPrefix(m, "WATCHDOG=") {
			t.Errorf("unexpected %q", m)
		}
	}
	if calls.Load() != c {
		t.Error("alive called after Watchdog returned")
	}
}
