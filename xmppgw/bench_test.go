//go:build integration

package xmppgw_test

// The XMPP benchmark figures. They are a test, not part of the bench command
// (internal/bench), because the Prosody harness takes a testing.TB, which
// only the testing package can provide; and a test reuses startBridge, so
// the bridge measured is assembled exactly as in the integration tests.
// The test is skipped unless -figures is given, and it asserts no timings:
//
//	go test ./xmppgw/ -run '^TestLatencyFigures$' -count=1 -v -figures
//
// (-v is needed to see the figures; -figures.n, -figures.interval,
// -figures.rss-duration and -figures.rss-sample change the settings.)
//
// It prints, with the machine and the command:
//
//   - latency from the simulated radio's write of a text packet returning
//     (radio on a pty, radio link, embedded broker and XMPP gateway in this
//     process) to the other occupant's client receiving the groupchat
//     message the bridge posted, next to the latency of a direct message
//     between two clients through the same Prosody (from just before Say to
//     the receiver's Received), and their ratio: what the bridge costs;
//   - resident memory of the daemon built from ./cmd/sovereign-bridge with
//     --device sim and the XMPP gateway on, joined to a room on the same
//     Prosody.

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"mellium.im/xmpp/jid"

	"github.com/jshiffer/lora-xmpp-bridge/internal/bench/benchkit"
	"github.com/jshiffer/lora-xmpp-bridge/internal/meshsim"
	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
	"github.com/jshiffer/lora-xmpp-bridge/internal/xmpptest"
	"github.com/jshiffer/lora-xmpp-bridge/xmppgw"
)

var (
	figures        = flag.Bool("figures", false, "run TestLatencyFigures and print the XMPP benchmark figures (use with -run '^TestLatencyFigures$' -v)")
	figN           = flag.Int("figures.n", 200, "messages per latency series")
	figInterval    = flag.Duration("figures.interval", 20*time.Millisecond, "spacing of the messages")
	figRSSDuration = flag.Duration("figures.rss-duration", 20*time.Second, "how long to sample the daemon's memory after it joined the room (0 skips it)")
	figRSSSample   = flag.Duration("figures.rss-sample", 100*time.Millisecond, "how often to sample /proc/PID/status")
)

// figuresLatency is what the latency part measured.
type figuresLatency struct {
	bridged, direct benchkit.Latency
	sizes           []int // body sizes of the bridged messages, sorted
}

func TestLatencyFigures(t *testing.T) {
	if !*figures {
		t.Skip("benchmark figures: go test ./xmppgw/ -run '^TestLatencyFigures$' -count=1 -v -figures")
	}
	n, interval := *figN, *figInterval
	if n < 1 || interval <= 0 || *figRSSDuration < 0 || *figRSSSample <= 0 {
		t.Fatal("-figures.n, -figures.interval and -figures.rss-sample must be positive")
	}
	started := time.Now()
	srv := xmpptest.StartProsody(t, xmpptest.WithAccount("bridge", "bridge-pw"),
		xmpptest.WithAccount("alice", "alice-pw"), xmpptest.WithAccount("bob", "bob-pw"))

	// Subtests, so the in-process bridge (and its occupant) is gone before
	// the daemon joins the same room with the same account and nick.
	var lat figuresLatency
	if !t.Run("latency", func(t *testing.T) { lat = measureLatency(t, srv, n, interval) }) {
		return
	}
	var mem benchkit.RSS
	var daemonArgs []string
	if *figRSSDuration > 0 {
		if !t.Run("memory", func(t *testing.T) { mem, daemonArgs = measureMemory(t, srv) }) {
			return
		}
	}

	fmt.Println()
	fmt.Println("SovereignRelay XMPP benchmark")
	fmt.Printf("  date:      %s\n", started.UTC().Format(time.RFC3339))
	fmt.Printf("  machine:   %s\n", benchkit.Machine())
	fmt.Printf("  go:        %s\n", runtime.Version())
	fmt.Printf("  prosody:   %s\n", benchkit.ProsodyVersion())
	fmt.Printf("  command:   %s\n", benchkit.TestCommand("./xmppgw/"))
	fmt.Printf("  settings:  -figures.n %d -figures.interval %v -figures.rss-duration %v -figures.rss-sample %v\n",
		n, interval, *figRSSDuration, *figRSSSample)

	b, d, s := lat.bridged, lat.direct, lat.sizes
	fmt.Printf("\nLatency, %d messages %v apart, bodies of %d–%d bytes (median %d), to the other occupant's client (bob):\n\n",
		n, interval, s[0], s[len(s)-1], s[len(s)/2])
	fmt.Println("| path | p50 | p99 | max | received |")
	fmt.Println("|---|---:|---:|---:|---:|")
	fmt.Printf("| SovereignRelay: radio frame written → groupchat message received | %s | %s | %s | %d/%d |\n",
		benchkit.Ms(b.P50), benchkit.Ms(b.P99), benchkit.Ms(b.Max), b.Got, n)
	fmt.Printf("| Prosody: occupant says → other occupant receives | %s | %s | %s | %d/%d |\n",
		benchkit.Ms(d.P50), benchkit.Ms(d.P99), benchkit.Ms(d.Max), d.Got, n)
	fmt.Printf("| ratio SovereignRelay / direct | %.2f | %.2f | %.2f | |\n",
		benchkit.Ratio(b.P50, d.P50), benchkit.Ratio(b.P99, d.P99), benchkit.Ratio(b.Max, d.Max))
	if daemonArgs != nil {
		fmt.Printf("\nDaemon memory with the XMPP gateway on, sampled every %v for %v after \"joined room\":\n", *figRSSSample, *figRSSDuration)
		fmt.Printf("  SSL_CERT_FILE=<throwaway CA> %s\n\n", strings.Join(daemonArgs, " "))
		fmt.Println("| max VmRSS | final VmRSS | VmHWM | samples |")
		fmt.Println("|---:|---:|---:|---:|")
		fmt.Printf("| %s | %s | %s | %d |\n", benchkit.MiB(mem.MaxRSS), benchkit.MiB(mem.FinalRSS), benchkit.MiB(mem.HWM), mem.Samples)
	}
	fmt.Println()
	if b.Got < n || d.Got < n {
		t.Errorf("messages lost: bridged %d/%d, direct %d/%d", b.Got, n, d.Got, n)
	}
}

// measureLatency times n mesh texts through the bridge into the room
// "village", then n messages from alice in the room "direct", both to bob.
// The two rooms keep the series apart: the bridge does not see (and send
// to the mesh) the direct messages, and each message goes to two
// occupants, the sender and bob.
func measureLatency(t *testing.T, srv *xmpptest.Server, n int, interval time.Duration) figuresLatency {
	ctx := context.Background()
	village := jid.MustParse("village@" + srv.MUCDomain)
	direct := "direct@" + srv.MUCDomain
	alice := xmpptest.Dial(t, srv, "alice", "alice-pw")
	bob := xmpptest.Dial(t, srv, "bob", "bob-pw")
	for _, j := range []struct {
		c          *xmpptest.Client
		room, nick string
	}{{bob, village.String(), "bob"}, {bob, direct, "bob"}, {alice, direct, "alice"}} {
		if err := j.c.Join(ctx, j.room, j.nick); err != nil {
			t.Fatal(err)
		}
	}

	// Registered before startBridge, so it runs after startBridge's cleanup
	// has cancelled the bridge: wait until the gateway has left.
	var br *bridge
	t.Cleanup(func() {
		if br == nil {
			return
		}
		select {
		case <-br.err:
		case <-time.After(wait):
			t.Errorf("the XMPP gateway did not stop within %v", wait)
		}
	})
	// The daemon's keepalive timing, not the tests' fast one.
	br = startBridge(t, srv, village, func(c *xmppgw.Config) { c.PingInterval, c.PingTimeout, c.SelfPingInterval = 0, 0, 0 })

	// Warm up both paths; the first also waits until the bridge joined.
	peers := meshsim.Demo().Peers
	for k := range 5 {
		text := fmt.Sprintf("warm-up %d", k)
		br.radio.Inject(br.radio.TextPacket(peers[k%len(peers)].Num, text))
		bob.WaitMessage(t, wait, func(m xmpptest.Message) bool { return m.Room == village.String() && strings.HasSuffix(m.Body, text) })
		if _, err := alice.Say(ctx, direct, text); err != nil {
			t.Fatal(err)
		}
		bob.WaitMessage(t, wait, func(m xmpptest.Message) bool { return m.Room == direct && m.Body == text })
	}

	t.Logf("mesh → room, %d messages %v apart", n, interval)
	sent := make([]time.Time, n)
	tick := time.NewTicker(interval)
	for i := range n {
		<-tick.C
		pkt := br.radio.TextPacket(peers[i%len(peers)].Num, fmt.Sprintf("SovereignRelay latency %s from the ridge 🌄", benchkit.Token(i)))
		if !br.radio.Inject(pkt) {
			t.Fatalf("radio could not deliver message %d (link down?)", i)
		}
		sent[i] = time.Now()
	}
	tick.Stop()
	recv, bodies := arrivals(bob, village.String(), n)
	res := figuresLatency{bridged: benchkit.Summarize(sent, recv)}
	for _, b := range bodies {
		if b != "" {
			res.sizes = append(res.sizes, len(b))
		}
	}
	if len(res.sizes) == 0 {
		t.Fatal("no mesh text reached the room")
	}
	slices.Sort(res.sizes)

	// The same bodies, said by alice in the other room.
	t.Logf("occupant → occupant, %d messages %v apart", n, interval)
	sent = make([]time.Time, n)
	tick = time.NewTicker(interval)
	for i := range n {
		body := bodies[i]
		if body == "" { // lost on the bridged path
			body = "Ana's T-Beam: SovereignRelay latency " + benchkit.Token(i) + " from the ridge 🌄"
		}
		<-tick.C
		sent[i] = time.Now()
		if _, err := alice.Say(ctx, direct, body); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	tick.Stop()
	recv, _ = arrivals(bob, direct, n)
	res.direct = benchkit.Summarize(sent, recv)
	return res
}

// arrivals waits (at most wait) until c has received the n probe messages
// in room, and returns when each arrived and its body (zero values for the
// ones that did not).
func arrivals(c *xmpptest.Client, room string, n int) ([]time.Time, []string) {
	recv, bodies := make([]time.Time, n), make([]string, n)
	testutil.Poll(context.Background(), wait, func() bool {
		got := 0
		for _, m := range c.Messages() {
			i, ok := benchkit.TokenIndex(m.Body)
			if !ok || m.Room != room || m.Delayed || i >= n || !recv[i].IsZero() {
				continue
			}
			recv[i], bodies[i] = m.Received, m.Body
		}
		for _, r := range recv {
			if !r.IsZero() {
				got++
			}
		}
		return got == n
	})
	return recv, bodies
}

// measureMemory runs the daemon with the XMPP gateway on against srv and
// samples its memory once it has joined the room. It returns the figures
// and the command line (with the real server address).
func measureMemory(t *testing.T, srv *xmpptest.Server) (benchkit.RSS, []string) {
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
	args := []string{"--device", "sim", "-j", "bridge@" + srv.Domain, "--password-file", pwFile,
		"-r", "village@" + srv.MUCDomain, "-n", "meshbridge", "--xmpp-server", srv.Addr,
		"--mqtt-listen", "127.0.0.1:0", "--state-dir", filepath.Join(dir, "state")}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+srv.CAFile)
	t.Logf("daemon memory over %v", *figRSSDuration)
	mem, err := benchkit.MeasureRSS(cmd, "joined room", wait, *figRSSDuration, *figRSSSample)
	if err != nil {
		t.Fatal(err)
	}
	return mem, append([]string{"sovereign-bridge"}, args...)
}
