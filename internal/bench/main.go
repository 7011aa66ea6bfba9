// Command bench measures SovereignRelay end to end and prints a table that
// can be pasted into a README:
//
//   - uplink latency: from the moment the simulated radio's write of a text
//     packet returns to the moment a real mosquitto_sub prints the JSON line
//     the bridge published for it (radio over TCP loopback, bridge and
//     embedded broker in this process);
//   - the same for mosquitto itself: a Go (paho) client publishes the same
//     payloads to a real mosquitto broker, measured to a real mosquitto_sub;
//   - resident memory of the daemon built from ./cmd/sovereign-bridge,
//     running with --device sim.
//
// Run it from the module root: go run ./internal/bench [-n 500] [-interval 5ms] [-rss-duration 20s].
// It needs mosquitto and mosquitto_sub (Debian package mosquitto and
// mosquitto-clients). Every process it starts listens on a free loopback
// port and is stopped before it exits.
//
// The brokers subcommand sets the embedded broker against mosquitto
// (go run ./internal/bench brokers [-h]):
//
//   - latency: the daemon built from ./cmd/sovereign-bridge on a simulated
//     radio served by this process (--device tcp://), once with its
//     embedded broker and once with --mqtt-broker pointing at mosquitto,
//     each time from the radio's write of a text to mosquitto_sub's line;
//   - throughput: one paho publisher and 1 or 10 paho subscribers, QoS 0
//     and 1, against each broker running as a server in a process of its
//     own (the embedded one through this program's hidden
//     serve-embedded-broker subcommand), with the CPU time each process
//     used.
//
// The XMPP figures (mesh text → groupchat message next to a direct message
// between two occupants, and the daemon's memory with the XMPP gateway on)
// need the Prosody harness, which takes a testing.TB, so they are a test,
// skipped unless asked for:
//
//	go test -tags integration ./xmppgw/ -run '^TestLatencyFigures$' -count=1 -v -figures
//
// and so is the mesh text → groupchat latency through the daemon with each
// broker:
//
//	go test -tags integration ./internal/bench/ -run '^TestXMPPBrokerFigures$' -count=1 -v -figures
//
// All share package benchkit.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/jshiffer/lora-xmpp-bridge/broker"
	"github.com/jshiffer/lora-xmpp-bridge/internal/bench/benchkit"
	"github.com/jshiffer/lora-xmpp-bridge/internal/meshsim"
	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/serialgw"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

type options struct {
	n           int
	interval    time.Duration
	timeout     time.Duration
	rssDuration time.Duration
	rssSample   time.Duration
	verbose     bool
}

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "brokers":
			os.Exit(brokersMain(os.Args[2:]))
		case serveEmbeddedCmd:
			os.Exit(serveEmbeddedMain(os.Args[2:]))
		}
	}
	var o options
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: go run ./internal/bench [flags]\n       go run ./internal/bench brokers [flags]   (the embedded broker against mosquitto; -h for its flags)")
		flag.PrintDefaults()
	}
	flag.IntVar(&o.n, "n", 500, "messages per latency measurement")
	flag.DurationVar(&o.interval, "interval", 5*time.Millisecond, "spacing of the messages")
	flag.DurationVar(&o.timeout, "timeout", 20*time.Second, "deadline for each wait (readiness, last message, shutdown)")
	flag.DurationVar(&o.rssDuration, "rss-duration", 20*time.Second, "how long to run the daemon for the memory figures (0 skips them)")
	flag.DurationVar(&o.rssSample, "rss-sample", 100*time.Millisecond, "how often to sample /proc/PID/status")
	flag.BoolVar(&o.verbose, "v", false, "log the in-process bridge to stderr")
	flag.Parse()
	if o.n < 1 || o.interval <= 0 || o.timeout <= 0 {
		fmt.Fprintln(os.Stderr, "bench: -n, -interval and -timeout must be positive")
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	for _, c := range []string{"mosquitto", "mosquitto_sub"} {
		if _, err := exec.LookPath(c); err != nil {
			if _, err2 := os.Stat("/usr/sbin/" + c); err2 != nil {
				return fmt.Errorf("%s not found (apt-get install mosquitto mosquitto-clients): %w", c, err)
			}
		}
	}
	tmp, err := os.MkdirTemp("", "sovereign-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	printHeader(fmt.Sprintf("-n %d -interval %v -rss-duration %v -rss-sample %v", o.n, o.interval, o.rssDuration, o.rssSample))

	fmt.Fprintf(os.Stderr, "bench: SovereignRelay uplink latency, %d messages...\n", o.n)
	ours, payloads, err := benchBridge(o, tmp)
	if err != nil {
		return fmt.Errorf("bridge latency: %w", err)
	}
	fmt.Fprintf(os.Stderr, "bench: mosquitto latency, %d messages...\n", o.n)
	theirs, err := benchMosquitto(o, tmp, payloads)
	if err != nil {
		return fmt.Errorf("mosquitto latency: %w", err)
	}
	var mem *benchkit.RSS
	if o.rssDuration > 0 {
		fmt.Fprintf(os.Stderr, "bench: daemon memory over %v...\n", o.rssDuration)
		m, err := benchRSS(o, tmp)
		if err != nil {
			return fmt.Errorf("daemon memory: %w", err)
		}
		mem = &m
	}

	sizes := make([]int, 0, len(payloads))
	for _, p := range payloads {
		sizes = append(sizes, len(p))
	}
	slices.Sort(sizes)
	fmt.Printf("\nLatency, %d messages %v apart, JSON payloads of %d–%d bytes (median %d), to a mosquitto_sub line:\n\n",
		o.n, o.interval, sizes[0], sizes[len(sizes)-1], sizes[len(sizes)/2])
	fmt.Println("| path | p50 | p99 | max | received |")
	fmt.Println("|---|---:|---:|---:|---:|")
	fmt.Printf("| SovereignRelay: radio frame written → JSON line | %s | %s | %s | %d/%d |\n", benchkit.Ms(ours.P50), benchkit.Ms(ours.P99), benchkit.Ms(ours.Max), ours.Got, o.n)
	fmt.Printf("| mosquitto: paho publish written → line | %s | %s | %s | %d/%d |\n", benchkit.Ms(theirs.P50), benchkit.Ms(theirs.P99), benchkit.Ms(theirs.Max), theirs.Got, o.n)
	fmt.Printf("| ratio SovereignRelay / mosquitto | %.2f | %.2f | %.2f | |\n",
		benchkit.Ratio(ours.P50, theirs.P50), benchkit.Ratio(ours.P99, theirs.P99), benchkit.Ratio(ours.Max, theirs.Max))
	if mem != nil {
		fmt.Printf("\nDaemon memory, sovereign-bridge --device sim, sampled every %v for %v after \"radio ready\":\n\n", o.rssSample, o.rssDuration)
		fmt.Println("| max VmRSS | final VmRSS | VmHWM | samples |")
		fmt.Println("|---:|---:|---:|---:|")
		fmt.Printf("| %s | %s | %s | %d |\n", benchkit.MiB(mem.MaxRSS), benchkit.MiB(mem.FinalRSS), benchkit.MiB(mem.HWM), mem.Samples)
	}
	if ours.Got < o.n || theirs.Got < o.n {
		return fmt.Errorf("messages lost: bridge %d/%d, mosquitto %d/%d", ours.Got, o.n, theirs.Got, o.n)
	}
	return nil
}

func printHeader(settings string) {
	cmdline := "go run ./internal/bench"
	if !strings.Contains(os.Args[0], "go-build") {
		cmdline = os.Args[0]
	}
	for _, a := range os.Args[1:] {
		cmdline += " " + benchkit.ShellQuote(a)
	}
	fmt.Println("SovereignRelay benchmark")
	fmt.Printf("  date:      %s\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Printf("  machine:   %s\n", benchkit.Machine())
	fmt.Printf("  go:        %s\n", runtime.Version())
	fmt.Printf("  mosquitto: %s\n", mosquittoVersion())
	fmt.Printf("  command:   %s\n", cmdline)
	fmt.Printf("  settings:  %s\n", settings)
}

// --- latency through the bridge ---

// benchBridge runs the simulated radio (TCP loopback), the embedded broker
// (127.0.0.1:0) and the radio link in this process, injects o.n texts and
// times each to its JSON line from mosquitto_sub. It returns the JSON
// payloads, for the mosquitto run to publish the same.
func benchBridge(o options, tmp string) (benchkit.Latency, [][]byte, error) {
	log := slog.New(slog.DiscardHandler)
	if o.verbose {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	simCfg := meshsim.Demo()
	simCfg.TrafficInterval = 0 // only our probes
	radio := meshsim.New(simCfg)
	addr, serve, err := radio.ListenTCP(ctx, "127.0.0.1:0")
	if err != nil {
		return benchkit.Latency{}, nil, err
	}
	serveDone := make(chan struct{})
	go func() { defer close(serveDone); _ = serve() }()
	defer func() { cancel(); <-serveDone }()

	bk, err := broker.NewEmbedded(broker.Config{Listen: "127.0.0.1:0"}, log)
	if err != nil {
		return benchkit.Latency{}, nil, err
	}
	if err := bk.Start(); err != nil {
		return benchkit.Latency{}, nil, err
	}
	defer bk.Close()

	stateDir := filepath.Join(tmp, "inproc-state")
	gw, err := serialgw.New(serialgw.Config{
		Device: serialgw.Device{Kind: "tcp", Addr: addr.String()}, Encrypt: true, StateDir: stateDir,
	}, bk, log)
	if err != nil {
		return benchkit.Latency{}, nil, err
	}
	gwDone := make(chan struct{})
	go func() { defer close(gwDone); _ = gw.Run(ctx) }()
	defer func() { cancel(); <-gwDone }()

	if err := benchkit.WaitUntil(o.timeout, radio.Changed, radio.Ready); err != nil {
		return benchkit.Latency{}, nil, fmt.Errorf("radio handshake: %w", err)
	}

	root := topics.Root("", simCfg.Region.String())
	jsonTopic := topics.JSON(root, mesh.PresetName(simCfg.Preset), mesh.NodeID(simCfg.NodeNum))
	host, port, _ := net.SplitHostPort(bk.Addr())
	// The radio side's retained status arrives once the subscription is in place.
	status := topics.Status(mesh.NodeID(simCfg.NodeNum))
	sub, err := startSub(o, host, port, status, jsonTopic, status)
	if err != nil {
		return benchkit.Latency{}, nil, err
	}
	defer sub.stop(o.timeout)
	if err := sub.waitReady(o.timeout); err != nil {
		return benchkit.Latency{}, nil, err
	}

	sent, err := injectTexts(o, radio, simCfg.Peers)
	if err != nil {
		return benchkit.Latency{}, nil, err
	}
	recv, payloads := sub.wait(o.n, o.timeout)
	return benchkit.Summarize(sent, recv), payloads, nil
}

// injectTexts has the simulated radio hand o.n texts from peers to its
// client, o.interval apart, and returns when each write returned.
func injectTexts(o options, radio *meshsim.Radio, peers []meshsim.Peer) ([]time.Time, error) {
	sent := make([]time.Time, o.n)
	tick := time.NewTicker(o.interval)
	defer tick.Stop()
	for i := range o.n {
		<-tick.C
		pkt := radio.TextPacket(peers[i%len(peers)].Num, fmt.Sprintf("SovereignRelay latency %s from the ridge 🌄", benchkit.Token(i)))
		if !radio.Inject(pkt) {
			return nil, fmt.Errorf("radio could not deliver message %d (link down?)", i)
		}
		sent[i] = time.Now()
	}
	return sent, nil
}

// --- latency through mosquitto ---

// benchMosquitto starts a mosquitto broker on a free loopback port and
// publishes payloads from paho, timing each to its mosquitto_sub line.
func benchMosquitto(o options, tmp string, payloads [][]byte) (benchkit.Latency, error) {
	broker, addr, err := startMosquitto(filepath.Join(tmp, "mosquitto.conf"), o.timeout)
	if err != nil {
		return benchkit.Latency{}, err
	}
	defer broker.Stop(o.timeout)
	_, port, _ := net.SplitHostPort(addr)

	// The connection notes when each write returns: paho completes a QoS 0
	// token only after its write, but on another goroutine, a little later.
	var lastWrite atomic.Int64
	opts := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("sovereign-bench").
		SetAutoReconnect(false).SetConnectTimeout(o.timeout).
		SetCustomOpenConnectionFn(func(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
			c, err := net.DialTimeout("tcp", u.Host, o.timeout)
			if err != nil {
				return nil, err
			}
			return &timedConn{Conn: c, last: &lastWrite}, nil
		})
	client := paho.NewClient(opts)
	if t := client.Connect(); !t.WaitTimeout(o.timeout) || t.Error() != nil {
		return benchkit.Latency{}, fmt.Errorf("paho connect: %v", t.Error())
	}
	defer client.Disconnect(100)

	const readyTopic, topic = "bench/ready", "msh/EU_868/2/json/LongFast/!5eed0001"
	if t := client.Publish(readyTopic, 0, true, "ready"); !t.WaitTimeout(o.timeout) || t.Error() != nil {
		return benchkit.Latency{}, fmt.Errorf("paho publish: %v", t.Error())
	}
	sub, err := startSub(o, "127.0.0.1", port, readyTopic, topic, readyTopic)
	if err != nil {
		return benchkit.Latency{}, err
	}
	defer sub.stop(o.timeout)
	if err := sub.waitReady(o.timeout); err != nil {
		return benchkit.Latency{}, err
	}

	sent := make([]time.Time, o.n)
	tick := time.NewTicker(o.interval)
	defer tick.Stop()
	for i := range o.n {
		p := payloadFor(payloads, i)
		<-tick.C
		t := client.Publish(topic, 0, false, p)
		if !t.WaitTimeout(o.timeout) || t.Error() != nil {
			return benchkit.Latency{}, fmt.Errorf("paho publish %d: %v", i, t.Error())
		}
		sent[i] = time.Unix(0, lastWrite.Load())
	}
	recv, _ := sub.wait(o.n, o.timeout)
	return benchkit.Summarize(sent, recv), nil
}

// startMosquitto starts a mosquitto broker with the configuration written
// to conf: a free loopback port, anonymous clients, no persistence, and
// otherwise mosquitto's own defaults. It returns once the broker accepts
// connections.
func startMosquitto(conf string, timeout time.Duration) (*benchkit.Proc, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	if err := os.WriteFile(conf, fmt.Appendf(nil, "listener %d 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n", port), 0o644); err != nil {
		return nil, "", err
	}
	p, err := benchkit.StartProc(bin("mosquitto"), []string{"-c", conf}, nil)
	if err != nil {
		return nil, "", err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if err := waitListening(p, addr, timeout); err != nil {
		p.Stop(timeout)
		return nil, "", fmt.Errorf("mosquitto: %w", err)
	}
	return p, addr, nil
}

// waitListening waits until addr accepts connections, or p exits.
func waitListening(p *benchkit.Proc, addr string, timeout time.Duration) error {
	err := benchkit.WaitUntil(timeout, nil, func() bool {
		if p.Exited() {
			return true
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	if err != nil || p.Exited() {
		return fmt.Errorf("not listening on %s: %v; output: %s", addr, err, p.Output())
	}
	return nil
}

// timedConn records when its last Write returned.
type timedConn struct {
	net.Conn
	last *atomic.Int64
}

func (c *timedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.last.Store(time.Now().UnixNano())
	return n, err
}

// payloadFor is the bridge's JSON for message i, or, if the bridge lost
// that one, another payload of its size with i's token.
func payloadFor(payloads [][]byte, i int) []byte {
	if i < len(payloads) && payloads[i] != nil {
		return payloads[i]
	}
	for _, p := range payloads {
		if j := strings.Index(string(p), "probe-"); j >= 0 && j+len(benchkit.Token(i)) <= len(p) {
			q := slices.Clone(p)
			copy(q[j:], benchkit.Token(i))
			return q
		}
	}
	return []byte(`{"text":"` + benchkit.Token(i) + `"}`)
}

// --- mosquitto_sub ---

// sub is a running mosquitto_sub printing "topic payload" lines, each
// timestamped when this process reads it.
type sub struct {
	p       *benchkit.Proc
	readyOn string

	mu       sync.Mutex
	ready    bool
	recv     []time.Time
	payloads [][]byte
	count    int
	changed  chan struct{}
}

func startSub(o options, host, port string, readyTopic string, filters ...string) (*sub, error) {
	args := []string{"-h", host, "-p", port, "-v"}
	for _, f := range filters {
		args = append(args, "-t", f)
	}
	s := &sub{readyOn: readyTopic, recv: make([]time.Time, o.n), payloads: make([][]byte, o.n), changed: make(chan struct{})}
	p, err := benchkit.StartProc(bin("mosquitto_sub"), args, s.line)
	if err != nil {
		return nil, err
	}
	s.p = p
	return s, nil
}

func (s *sub) line(at time.Time, line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	topic, payload, _ := strings.Cut(line, " ")
	switch {
	case topic == s.readyOn:
		s.ready = true
	default:
		if i, ok := benchkit.TokenIndex(payload); ok && i < len(s.recv) && s.recv[i].IsZero() {
			s.recv[i] = at
			s.payloads[i] = []byte(payload)
			s.count++
		}
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *sub) changes() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

func (s *sub) waitReady(timeout time.Duration) error {
	err := benchkit.WaitUntil(timeout, s.changes, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.ready || s.p.Exited()
	})
	if err != nil || s.p.Exited() {
		return fmt.Errorf("mosquitto_sub not subscribed: %v; output: %s", err, s.p.Output())
	}
	return nil
}

// wait waits (at most timeout) for n messages and returns what arrived.
func (s *sub) wait(n int, timeout time.Duration) ([]time.Time, [][]byte) {
	_ = benchkit.WaitUntil(timeout, s.changes, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.count >= n
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.recv), slices.Clone(s.payloads)
}

func (s *sub) stop(timeout time.Duration) { s.p.Stop(timeout) }

// --- the daemon's memory ---

func benchRSS(o options, tmp string) (benchkit.RSS, error) {
	exe, err := benchkit.BuildDaemon(tmp)
	if err != nil {
		return benchkit.RSS{}, err
	}
	cmd := exec.Command(exe, "--device", "sim", "--mqtt-listen", "127.0.0.1:0", "--state-dir", filepath.Join(tmp, "daemon-state"))
	return benchkit.MeasureRSS(cmd, "radio ready", o.timeout, o.rssDuration, o.rssSample)
}

// --- helpers ---

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func bin(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return "/usr/sbin/" + name
}

func mosquittoVersion() string {
	out, _ := exec.Command(bin("mosquitto"), "-h").CombinedOutput()
	first, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(first)
}
