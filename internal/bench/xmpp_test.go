//go:build integration

package main

// The XMPP latency over each broker: the daemon with its embedded broker,
// then with --mqtt-broker pointing at mosquitto, each time timing mesh
// texts from the simulated radio's write (radio in this process, daemon on
// --device tcp://) to another occupant's client receiving the groupchat
// message. With the external broker the text crosses mosquitto twice
// inside the bridge: the radio link publishes it at QoS 1 through the
// outbox and the XMPP gateway receives it through its QoS 1 subscription.
//
// A test because the Prosody harness (internal/xmpptest) takes a
// testing.TB; skipped unless asked for, and it asserts no timings:
//
//	go test -tags integration ./internal/bench/ -run '^TestXMPPBrokerFigures$' -count=1 -v -figures

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jshiffer/lora-xmpp-bridge/internal/bench/benchkit"
	"github.com/jshiffer/lora-xmpp-bridge/internal/meshsim"
	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
	"github.com/jshiffer/lora-xmpp-bridge/internal/xmpptest"
)

var (
	figures     = flag.Bool("figures", false, "run TestXMPPBrokerFigures and print its figures (use with -run '^TestXMPPBrokerFigures$' -v)")
	figN        = flag.Int("figures.n", 200, "messages per latency series")
	figInterval = flag.Duration("figures.interval", 20*time.Millisecond, "spacing of the messages")
)

const xmppWait = 30 * time.Second

func TestXMPPBrokerFigures(t *testing.T) {
	if !*figures {
		t.Skip("benchmark figures: go test -tags integration ./internal/bench/ -run '^TestXMPPBrokerFigures$' -count=1 -v -figures")
	}
	n, interval := *figN, *figInterval
	if n < 1 || interval <= 0 {
		t.Fatal("-figures.n and -figures.interval must be positive")
	}
	started := time.Now()
	srv := xmpptest.StartProsody(t, xmpptest.WithAccount("bridge", "bridge-pw"), xmpptest.WithAccount("bob", "bob-pw"))
	dir := t.TempDir()
	t.Logf("building ./cmd/sovereign-bridge")
	exe, err := benchkit.BuildDaemon(dir)
	if err != nil {
		t.Fatal(err)
	}
	pwFile := filepath.Join(dir, "bridge.password")
	if err := os.WriteFile(pwFile, []byte("bridge-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mq, mqAddr, err := startMosquitto(filepath.Join(dir, "mosquitto.conf"), xmppWait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mq.Stop(xmppWait) })
	bob := xmpptest.Dial(t, srv, "bob", "bob-pw")

	// A room per broker, so neither daemon sees the other's messages.
	legs := []struct {
		name, room string
		args       []string
	}{
		{"embedded", "village-embedded@" + srv.MUCDomain, []string{"--mqtt-listen", "off"}},
		{"mosquitto", "village-mosquitto@" + srv.MUCDomain, []string{"--mqtt-broker", "mqtt://" + mqAddr}},
	}
	res := make([]benchkit.Latency, len(legs))
	busy := make([]float64, len(legs))
	for i, l := range legs {
		if err := bob.Join(context.Background(), l.room, "bob"); err != nil {
			t.Fatal(err)
		}
		args := append([]string{"-j", "bridge@" + srv.Domain, "--password-file", pwFile, "-r", l.room, "-n", "meshbridge",
			"--xmpp-server", srv.Addr, "--state-dir", filepath.Join(dir, "state-"+l.name)}, l.args...)
		t.Logf("daemon with the %s broker, %d messages %v apart", l.name, n, interval)
		res[i], busy[i] = xmppLeg(t, exe, args, srv.CAFile, bob, l.room, options{n: n, interval: interval, timeout: xmppWait})
	}

	emb, ext := res[0], res[1]
	fmt.Println()
	fmt.Println("SovereignRelay XMPP latency over each broker")
	fmt.Printf("  date:      %s\n", started.UTC().Format(time.RFC3339))
	fmt.Printf("  machine:   %s\n", benchkit.Machine())
	fmt.Printf("  go:        %s\n", runtime.Version())
	fmt.Printf("  prosody:   %s\n", benchkit.ProsodyVersion())
	fmt.Printf("  mosquitto: %s\n", mosquittoVersion())
	fmt.Printf("  command:   %s\n", benchkit.TestCommand("-tags integration ./internal/bench/"))
	fmt.Printf("\nLatency, %d mesh texts %v apart, from the simulated radio's write of the frame to the other occupant's\n", n, interval)
	fmt.Println("client (bob) receiving the groupchat message; the daemon on --device tcp:// with the XMPP gateway on.")
	fmt.Println("\"machine busy\": all cores during the series, the processes measured included (/proc/stat); a run well above")
	fmt.Println("the others had company on the machine.")
	fmt.Println()
	fmt.Println("| broker | p50 | p99 | max | received | machine busy |")
	fmt.Println("|---|---:|---:|---:|---:|---:|")
	fmt.Printf("| embedded (`--mqtt-listen off`) | %s | %s | %s | %d/%d | %.0f%% |\n", benchkit.Ms(emb.P50), benchkit.Ms(emb.P99), benchkit.Ms(emb.Max), emb.Got, n, 100*busy[0])
	fmt.Printf("| mosquitto (`--mqtt-broker mqtt://127.0.0.1:PORT`) | %s | %s | %s | %d/%d | %.0f%% |\n", benchkit.Ms(ext.P50), benchkit.Ms(ext.P99), benchkit.Ms(ext.Max), ext.Got, n, 100*busy[1])
	fmt.Printf("| ratio mosquitto / embedded | %.2f | %.2f | %.2f | | |\n", benchkit.Ratio(ext.P50, emb.P50), benchkit.Ratio(ext.P99, emb.P99), benchkit.Ratio(ext.Max, emb.Max))
	fmt.Println()
	if emb.Got < n || ext.Got < n {
		t.Errorf("messages lost: embedded %d/%d, mosquitto %d/%d", emb.Got, n, ext.Got, n)
	}
}

// xmppLeg runs the daemon (exe with args) on a simulated radio served by
// this process until it has joined room, warms the path up, and times o.n
// texts to bob, and how busy the machine was meanwhile. The daemon is
// stopped before it returns.
func xmppLeg(t *testing.T, exe string, args []string, caFile string, bob *xmpptest.Client, room string, o options) (benchkit.Latency, float64) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	simCfg := meshsim.Demo()
	simCfg.TrafficInterval = 0 // only our probes
	radio := meshsim.New(simCfg)
	addr, serve, err := radio.ListenTCP(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveDone := make(chan struct{})
	go func() { defer close(serveDone); _ = serve() }()
	defer func() { cancel(); <-serveDone }()

	cmd := exec.Command(exe, append([]string{"--device", "tcp://" + addr.String()}, args...)...)
	cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+caFile)
	joined := make(chan struct{})
	var once sync.Once
	d, err := benchkit.StartCmd(cmd, func(_ time.Time, line string) {
		if strings.Contains(line, "joined room") {
			once.Do(func() { close(joined) })
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop(o.timeout)
	select {
	case <-joined:
	case <-d.Done():
		t.Fatalf("daemon exited: %s", d.Output())
	case <-time.After(o.timeout):
		t.Fatalf("daemon did not join %s within %v: %s", room, o.timeout, d.Output())
	}
	if !testutil.Poll(ctx, o.timeout, radio.Ready) {
		t.Fatalf("daemon did not finish the radio handshake: %s", d.Output())
	}

	// Warm up; the first also shows the whole path works.
	for k := range 5 {
		text := fmt.Sprintf("warm-up %d", k)
		radio.Inject(radio.TextPacket(simCfg.Peers[k%len(simCfg.Peers)].Num, text))
		bob.WaitMessage(t, o.timeout, func(m xmpptest.Message) bool { return m.Room == room && strings.HasSuffix(m.Body, text) })
	}
	meter := benchkit.NewCPUMeter()
	if err := meter.Start(); err != nil {
		t.Fatal(err)
	}
	sent, err := injectTexts(o, radio, simCfg.Peers)
	if err != nil {
		t.Fatal(err)
	}
	recv := arrivals(bob, room, o.n, o.timeout)
	if err := meter.Stop(); err != nil {
		t.Fatal(err)
	}
	return benchkit.Summarize(sent, recv), meter.MachineBusyShare
}

// arrivals waits (at most timeout) until c has received the n probe
// messages in room, and returns when each arrived (zero for those that
// did not).
func arrivals(c *xmpptest.Client, room string, n int, timeout time.Duration) []time.Time {
	recv := make([]time.Time, n)
	got := 0
	testutil.Poll(context.Background(), timeout, func() bool {
		for _, m := range c.Messages() {
			i, ok := benchkit.TokenIndex(m.Body)
			if !ok || m.Room != room || m.Delayed || i >= n || !recv[i].IsZero() {
				continue
			}
			recv[i] = m.Received
			got++
		}
		return got == n
	})
	return recv
}
