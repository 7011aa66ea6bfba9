//go:build integration

package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jshiffer/lora-xmpp-bridge/internal/spool"
	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
)

// collector records what a subscription delivers, in order.
type collector struct {
	mu  sync.Mutex
	got []string
}

func (c *collector) add(_ string, p []byte) {
	c.mu.Lock()
	c.got = append(c.got, string(p))
	c.mu.Unlock()
}

// distinct returns the messages in order of first arrival, and how many
// arrived more than once (QoS 1 is at least once; receivers dedupe).
func (c *collector) distinct() ([]string, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	dups := 0
	for _, m := range c.got {
		if seen[m] {
			dups++
			continue
		}
		seen[m] = true
		out = append(out, m)
	}
	return out, dups
}

func dialRemote(t *testing.T, cfg RemoteConfig) *Remote {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	r, err := DialRemote(ctx, cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func openOutbox(t *testing.T) *spool.Store {
	t.Helper()
	s, err := spool.Open(filepath.Join(t.TempDir(), "spool.db"), spool.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// The bridge's own messages reach a subscriber once each and in order
// although the broker is SIGKILLed and restarted in the middle of them:
// the outbox keeps what the broker has not acknowledged, and both sides'
// persistent sessions bring the rest.
func TestRemoteAcrossBrokerCrash(t *testing.T) {
	m := testutil.StartMosquitto(t)
	var box collector
	sub := dialRemote(t, RemoteConfig{URL: m.URL, ClientID: "test-sub"})
	if _, err := sub.Subscribe("sovereign/test/#", box.add); err != nil {
		t.Fatal(err)
	}
	pub := dialRemote(t, RemoteConfig{URL: m.URL, ClientID: "test-pub", Reliable: bridgeTopic, Outbox: openOutbox(t)})
	// The broker keeps sessions across a crash once it has saved them, as
	// it does within a second when configured to save on changes.
	m.WaitSaved(t, "test-sub", "sovereign/test/#", "test-pub")
	const n = 100
	want := make([]string, n)
	for i := range n {
		want[i] = fmt.Sprintf("msg-%03d", i)
		switch i {
		case 30:
			m.Kill()
		case 60:
			m.Start()
		}
		if err := pub.Publish("sovereign/test/rx", []byte(want[i]), false); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	testutil.Eventually(t, 60*time.Second, func() bool { got, _ := box.distinct(); return len(got) == n }, "subscriber never had all %d", n)
	got, dups := box.distinct()
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("out of order:\n%v", got)
	}
	t.Logf("%d messages across a broker SIGKILL: %d distinct, %d duplicates (dropped by the receivers' dedupe)", n, len(got), dups)
}

// A broker that is down when the bridge starts is no error: what is
// published meanwhile waits in the outbox and reaches the subscriber, whose
// persistent session the broker kept, once the broker is up.
func TestRemoteBrokerDownAtStart(t *testing.T) {
	m := testutil.StartMosquitto(t)
	var box collector
	sub := dialRemote(t, RemoteConfig{URL: m.URL, ClientID: "test-sub"})
	if _, err := sub.Subscribe("sovereign/test/#", box.add); err != nil {
		t.Fatal(err)
	}
	m.WaitSaved(t, "test-sub", "sovereign/test/#")
	m.Stop()
	pub := dialRemote(t, RemoteConfig{URL: m.URL, ClientID: "test-pub", Reliable: bridgeTopic, Outbox: openOutbox(t)})
	for i := range 10 {
		if err := pub.Publish("sovereign/test/rx", fmt.Appendf(nil, "early-%d", i), false); err != nil {
			t.Fatalf("publish while the broker is down: %v", err)
		}
	}
	if pub.Connected() {
		t.Fatal("connected to a stopped broker")
	}
	m.Start()
	testutil.Eventually(t, 60*time.Second, func() bool { got, _ := box.distinct(); return len(got) == 10 }, "subscriber never had all 10")
}

// A refused login is an error at once, not a retry loop; the password does
// not appear in it.
func TestRemoteLoginRefused(t *testing.T) {
	m := testutil.StartMosquitto(t, testutil.WithPasswordFile(t, "bridge", "right-pw"))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, err := DialRemote(ctx, RemoteConfig{URL: "mqtt://bridge@" + m.Addr, Password: "wrong-pw"}, quietLog())
	if !errors.Is(err, ErrBrokerAuth) || strings.Contains(err.Error(), "wrong-pw") {
		t.Fatalf("DialRemote with a wrong password = %v, want ErrBrokerAuth without the password", err)
	}
	r := dialRemote(t, RemoteConfig{URL: "mqtt://bridge@" + m.Addr, Password: "right-pw"})
	testutil.Eventually(t, 10*time.Second, r.Connected, "not connected with the right password")
}

// What the broker kept for a daemon's session while the daemon was down
// arrives right after the connect, before the daemon's gateways subscribe:
// it is held for them, handed over first and in order, not dropped
// unacknowledged.
func TestRemoteHoldsWhatArrivesBeforeSubscribe(t *testing.T) {
	m := testutil.StartMosquitto(t)
	first := dialRemote(t, RemoteConfig{URL: m.URL, ClientID: "radio-side"})
	if _, err := first.Subscribe("sovereign/mesh/tx", func(string, []byte) {}); err != nil {
		t.Fatal(err)
	}
	first.Close() // the radio side stops; the broker keeps its session

	outbox := openOutbox(t)
	pub := dialRemote(t, RemoteConfig{URL: m.URL, ClientID: "xmpp-side", Reliable: bridgeTopic, Outbox: outbox})
	for i := range 5 {
		if err := pub.Publish("sovereign/mesh/tx", fmt.Appendf(nil, "req-%d", i), false); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 20*time.Second, func() bool { n, _, _, _ := outbox.Stats(OutboxQueue); return n == 0 }, "outbox never drained")

	var box collector
	second := dialRemote(t, RemoteConfig{URL: m.URL, ClientID: "radio-side"})
	testutil.Eventually(t, 20*time.Second, second.Connected, "radio side never reconnected")
	if _, err := second.Subscribe("sovereign/mesh/tx", box.add); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := pub.Publish("sovereign/mesh/tx", fmt.Appendf(nil, "req-%d", 5+i), false); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 30*time.Second, func() bool { got, _ := box.distinct(); return len(got) == 10 }, "radio side never had all 10 requests")
	got, _ := box.distinct()
	if !slices.IsSorted(got) {
		t.Errorf("out of order: %q", got)
	}
}

// A broker that crashes after acknowledging messages it had not saved, and
// stays away longer than the republish window, still gets them again: the
// window reaches back from the loss of the connection, not the reconnect.
func TestRemoteRepublishAfterLongOutage(t *testing.T) {
	m := testutil.StartMosquitto(t, testutil.WithSlowSaves())
	var box collector
	sub := dialRemote(t, RemoteConfig{URL: m.URL, ClientID: "test-sub"})
	if _, err := sub.Subscribe("sovereign/#", box.add); err != nil {
		t.Fatal(err)
	}
	sub.Close()
	m.Stop() // a clean stop saves the subscriber's session
	m.Start()

	const window = 2 * time.Second
	outbox := openOutbox(t)
	pub := dialRemote(t, RemoteConfig{URL: m.URL, ClientID: "test-pub", Reliable: bridgeTopic, Outbox: outbox, RepublishWindow: window})
	testutil.Eventually(t, 20*time.Second, pub.Connected, "not connected")
	for i := range 3 {
		if err := pub.Publish("sovereign/mesh/rx", fmt.Appendf(nil, "m%d", i), false); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 20*time.Second, func() bool { n, _, _, _ := outbox.Stats(OutboxQueue); return n == 0 }, "outbox never drained")
	m.Kill() // what it held for the subscriber was never saved
	// The outage itself: longer than the window.
	<-time.After(window + time.Second)
	m.Start()
	testutil.Eventually(t, 90*time.Second, pub.Connected, "publisher never reconnected")

	sub = dialRemote(t, RemoteConfig{URL: m.URL, ClientID: "test-sub"})
	if _, err := sub.Subscribe("sovereign/#", box.add); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() bool { got, _ := box.distinct(); return len(got) == 3 }, "messages lost with the broker's crash")
}

// cuttableProxy forwards TCP connections to target until cut closes them
// all at once, as a network that goes away does: the broker sees the
// connection end without a goodbye.
type cuttableProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func startProxy(t *testing.T, target string) *cuttableProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cuttableProxy{ln: ln}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); p.cut(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(out, in); out.Close() }()
			go func() { defer wg.Done(); io.Copy(in, out); in.Close() }()
		}
	}()
	return p
}

func (p *cuttableProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// A connection that drops without a goodbye leaves the will on its topic;
// once the bridge is connected again, its last state there is restated.
func TestRemoteWillAndRestate(t *testing.T) {
	m := testutil.StartMosquitto(t)
	proxy := startProxy(t, m.Addr)
	const topic = "sovereign/bridge/status/!00000001"
	watcher := dialRemote(t, RemoteConfig{URL: m.URL, Reliable: func(string) bool { return true }})
	seen := &collector{}
	if _, err := watcher.Subscribe(topic, seen.add); err != nil {
		t.Fatal(err)
	}
	r := dialRemote(t, RemoteConfig{URL: "mqtt://" + proxy.ln.Addr().String(), Reliable: func(string) bool { return true },
		Outbox: openOutbox(t), Will: &Will{Topic: topic, Payload: []byte("gone")},
		// The state is older than what is republished after a loss anyway.
		RepublishWindow: time.Nanosecond})
	if err := r.Publish(topic, []byte("here"), true); err != nil {
		t.Fatal(err)
	}
	got := func() []string {
		seen.mu.Lock()
		defer seen.mu.Unlock()
		return slices.Clone(seen.got)
	}
	testutil.Eventually(t, 30*time.Second, func() bool { return slices.Equal(got(), []string{"here"}) }, "state never published: %q", got())
	testutil.Eventually(t, 30*time.Second, r.Connected, "not connected")
	proxy.cut()
	testutil.Eventually(t, 30*time.Second, func() bool { return len(got()) >= 2 }, "no will after the connection dropped: %q", got())
	testutil.Eventually(t, 30*time.Second, func() bool { g := got(); return g[len(g)-1] == "here" }, "state not restated after the reconnect: %q", got())
	if g := got(); g[1] != "gone" {
		t.Errorf("after the drop: %q, want the will, then the state again", g)
	}
}
