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
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
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
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/jshiffer/lora-xmpp-bridge/broker"
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
	var o options
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

	printHeader(o)

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
	var mem *rssResult
	if o.rssDuration > 0 {
		fmt.Fprintf(os.Stderr, "bench: daemon memory over %v...\n", o.rssDuration)
		if mem, err = benchRSS(o, tmp); err != nil {
			return fmt.Errorf("daemon memory: %w", err)
		}
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
	fmt.Printf("| SovereignRelay: radio frame written → JSON line | %s | %s | %s | %d/%d |\n", ms(ours.p50), ms(ours.p99), ms(ours.max), ours.got, o.n)
	fmt.Printf("| mosquitto: paho publish written → line | %s | %s | %s | %d/%d |\n", ms(theirs.p50), ms(theirs.p99), ms(theirs.max), theirs.got, o.n)
	fmt.Printf("| ratio SovereignRelay / mosquitto | %.2f | %.2f | %.2f | |\n",
		ratio(ours.p50, theirs.p50), ratio(ours.p99, theirs.p99), ratio(ours.max, theirs.max))
	if mem != nil {
		fmt.Printf("\nDaemon memory, sovereign-bridge --device sim, sampled every %v for %v after \"radio ready\":\n\n", o.rssSample, o.rssDuration)
		fmt.Println("| max VmRSS | final VmRSS | VmHWM | samples |")
		fmt.Println("|---:|---:|---:|---:|")
		fmt.Printf("| %s | %s | %s | %d |\n", mib(mem.maxRSS), mib(mem.finalRSS), mib(mem.hwm), mem.samples)
	}
	if ours.got < o.n || theirs.got < o.n {
		return fmt.Errorf("messages lost: bridge %d/%d, mosquitto %d/%d", ours.got, o.n, theirs.got, o.n)
	}
	return nil
}

func printHeader(o options) {
	cmdline := "go run ./internal/bench"
	if !strings.Contains(os.Args[0], "go-build") {
		cmdline = os.Args[0]
	}
	for _, a := range os.Args[1:] {
		cmdline += " " + shellQuote(a)
	}
	kernel := "?"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	fmt.Println("SovereignRelay benchmark")
	fmt.Printf("  date:      %s\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Printf("  machine:   %d CPUs (%s), %s/%s, kernel %s, GOMAXPROCS %d\n", runtime.NumCPU(), cpuModel(), runtime.GOOS, runtime.GOARCH, kernel, runtime.GOMAXPROCS(0))
	fmt.Printf("  go:        %s\n", runtime.Version())
	fmt.Printf("  mosquitto: %s\n", mosquittoVersion())
	fmt.Printf("  command:   %s\n", cmdline)
	fmt.Printf("  settings:  -n %d -interval %v -rss-duration %v -rss-sample %v\n", o.n, o.interval, o.rssDuration, o.rssSample)
}

// --- latency through the bridge ---

type latency struct {
	p50, p99, max time.Duration
	got           int
}

func summarize(sent, recv []time.Time) latency {
	var ds []time.Duration
	for i := range sent {
		if !sent[i].IsZero() && !recv[i].IsZero() {
			ds = append(ds, recv[i].Sub(sent[i]))
		}
	}
	if len(ds) == 0 {
		return latency{}
	}
	slices.Sort(ds)
	rank := func(q float64) time.Duration { // nearest rank
		i := int(q*float64(len(ds))+0.999999) - 1
		return ds[max(0, min(i, len(ds)-1))]
	}
	return latency{p50: rank(0.50), p99: rank(0.99), max: ds[len(ds)-1], got: len(ds)}
}

// token marks message i in a payload, so the subscriber's lines can be matched.
func token(i int) string { return fmt.Sprintf("probe-%06d", i) }

func tokenIndex(line string) (int, bool) {
	_, rest, ok := strings.Cut(line, "probe-")
	if !ok || len(rest) < 6 {
		return 0, false
	}
	i, err := strconv.Atoi(rest[:6])
	return i, err == nil
}

// benchBridge runs the simulated radio (TCP loopback), the embedded broker
// (127.0.0.1:0) and the radio link in this process, injects o.n texts and
// times each to its JSON line from mosquitto_sub. It returns the JSON
// payloads, for the mosquitto run to publish the same.
func benchBridge(o options, tmp string) (latency, [][]byte, error) {
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
		return latency{}, nil, err
	}
	serveDone := make(chan struct{})
	go func() { defer close(serveDone); _ = serve() }()
	defer func() { cancel(); <-serveDone }()

	bk, err := broker.NewEmbedded(broker.Config{Listen: "127.0.0.1:0"}, log)
	if err != nil {
		return latency{}, nil, err
	}
	if err := bk.Start(); err != nil {
		return latency{}, nil, err
	}
	defer bk.Close()

	stateDir := filepath.Join(tmp, "inproc-state")
	gw, err := serialgw.New(serialgw.Config{
		Device: serialgw.Device{Kind: "tcp", Addr: addr.String()}, Encrypt: true, StateDir: stateDir,
	}, bk, log)
	if err != nil {
		return latency{}, nil, err
	}
	gwDone := make(chan struct{})
	go func() { defer close(gwDone); _ = gw.Run(ctx) }()
	defer func() { cancel(); <-gwDone }()

	if err := waitUntil(o.timeout, radio.Changed, radio.Ready); err != nil {
		return latency{}, nil, fmt.Errorf("radio handshake: %w", err)
	}

	root := topics.Root("", simCfg.Region.String())
	jsonTopic := topics.JSON(root, mesh.PresetName(simCfg.Preset), mesh.NodeID(simCfg.NodeNum))
	host, port, _ := net.SplitHostPort(bk.Addr())
	// The retained bridge status arrives once the subscription is in place.
	sub, err := startSub(o, host, port, topics.BridgeStatus, jsonTopic, topics.BridgeStatus)
	if err != nil {
		return latency{}, nil, err
	}
	defer sub.stop(o.timeout)
	if err := sub.waitReady(o.timeout); err != nil {
		return latency{}, nil, err
	}

	sent := make([]time.Time, o.n)
	peers := simCfg.Peers
	tick := time.NewTicker(o.interval)
	defer tick.Stop()
	for i := range o.n {
		<-tick.C
		pkt := radio.TextPacket(peers[i%len(peers)].Num, fmt.Sprintf("SovereignRelay latency %s from the ridge 🌄", token(i)))
		if !radio.Inject(pkt) {
			return latency{}, nil, fmt.Errorf("radio could not deliver message %d (link down?)", i)
		}
		sent[i] = time.Now()
	}
	recv, payloads := sub.wait(o.n, o.timeout)
	return summarize(sent, recv), payloads, nil
}

// --- latency through mosquitto ---

// benchMosquitto starts a mosquitto broker on a free loopback port and
// publishes payloads from paho, timing each to its mosquitto_sub line.
func benchMosquitto(o options, tmp string, payloads [][]byte) (latency, error) {
	port, err := freePort()
	if err != nil {
		return latency{}, err
	}
	conf := filepath.Join(tmp, "mosquitto.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "listener %d 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n", port), 0o644); err != nil {
		return latency{}, err
	}
	broker, err := startProc(bin("mosquitto"), "-c", conf)
	if err != nil {
		return latency{}, err
	}
	defer broker.stop(o.timeout)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if err := waitUntil(o.timeout, nil, func() bool {
		if broker.exited() {
			return true
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}); err != nil || broker.exited() {
		return latency{}, fmt.Errorf("mosquitto not listening on %s: %v; output: %s", addr, err, broker.output())
	}

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
		return latency{}, fmt.Errorf("paho connect: %v", t.Error())
	}
	defer client.Disconnect(100)

	const readyTopic, topic = "bench/ready", "msh/EU_868/2/json/LongFast/!5eed0001"
	if t := client.Publish(readyTopic, 0, true, "ready"); !t.WaitTimeout(o.timeout) || t.Error() != nil {
		return latency{}, fmt.Errorf("paho publish: %v", t.Error())
	}
	sub, err := startSub(o, "127.0.0.1", strconv.Itoa(port), readyTopic, topic, readyTopic)
	if err != nil {
		return latency{}, err
	}
	defer sub.stop(o.timeout)
	if err := sub.waitReady(o.timeout); err != nil {
		return latency{}, err
	}

	sent := make([]time.Time, o.n)
	tick := time.NewTicker(o.interval)
	defer tick.Stop()
	for i := range o.n {
		p := payloadFor(payloads, i)
		<-tick.C
		t := client.Publish(topic, 0, false, p)
		if !t.WaitTimeout(o.timeout) || t.Error() != nil {
			return latency{}, fmt.Errorf("paho publish %d: %v", i, t.Error())
		}
		sent[i] = time.Unix(0, lastWrite.Load())
	}
	recv, _ := sub.wait(o.n, o.timeout)
	return summarize(sent, recv), nil
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
		if j := strings.Index(string(p), "probe-"); j >= 0 && j+len(token(i)) <= len(p) {
			q := slices.Clone(p)
			copy(q[j:], token(i))
			return q
		}
	}
	return []byte(`{"text":"` + token(i) + `"}`)
}

// --- mosquitto_sub ---

// sub is a running mosquitto_sub printing "topic payload" lines, each
// timestamped when this process reads it.
type sub struct {
	p       *proc
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
	p, err := startProcLines(bin("mosquitto_sub"), args, s.line)
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
		if i, ok := tokenIndex(payload); ok && i < len(s.recv) && s.recv[i].IsZero() {
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
	err := waitUntil(timeout, s.changes, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.ready || s.p.exited()
	})
	if err != nil || s.p.exited() {
		return fmt.Errorf("mosquitto_sub not subscribed: %v; output: %s", err, s.p.output())
	}
	return nil
}

// wait waits (at most timeout) for n messages and returns what arrived.
func (s *sub) wait(n int, timeout time.Duration) ([]time.Time, [][]byte) {
	_ = waitUntil(timeout, s.changes, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.count >= n
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.recv), slices.Clone(s.payloads)
}

func (s *sub) stop(timeout time.Duration) { s.p.stop(timeout) }

// --- the daemon's memory ---

type rssResult struct {
	maxRSS, finalRSS, hwm int64 // bytes
	samples               int
}

func benchRSS(o options, tmp string) (*rssResult, error) {
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	exe := filepath.Join(tmp, "sovereign-bridge")
	build := exec.Command("go", "build", "-o", exe, "./cmd/sovereign-bridge")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build: %v\n%s", err, out)
	}
	readyCh := make(chan struct{})
	var once sync.Once
	d, err := startProcLines(exe, []string{"--device", "sim", "--mqtt-listen", "127.0.0.1:0", "--state-dir", filepath.Join(tmp, "daemon-state")},
		func(_ time.Time, line string) {
			if strings.Contains(line, "radio ready") {
				once.Do(func() { close(readyCh) })
			}
		})
	if err != nil {
		return nil, err
	}
	defer d.stop(o.timeout)
	select {
	case <-readyCh:
	case <-d.done:
		return nil, fmt.Errorf("daemon exited: %s", d.output())
	case <-time.After(o.timeout):
		return nil, fmt.Errorf("daemon not ready within %v: %s", o.timeout, d.output())
	}

	res := &rssResult{}
	sample := func() error {
		rss, hwm, err := procStatus(d.cmd.Process.Pid)
		if err != nil {
			return err
		}
		res.samples++
		res.maxRSS = max(res.maxRSS, rss)
		res.finalRSS, res.hwm = rss, hwm
		return nil
	}
	end := time.After(o.rssDuration)
	tick := time.NewTicker(o.rssSample)
	defer tick.Stop()
	for {
		if err := sample(); err != nil {
			return nil, fmt.Errorf("sampling the daemon: %v; output: %s", err, d.output())
		}
		select {
		case <-end:
			return res, sample()
		case <-d.done:
			return nil, fmt.Errorf("daemon exited during the run: %s", d.output())
		case <-tick.C:
		}
	}
}

// procStatus reads VmRSS and VmHWM (in bytes) of a process.
func procStatus(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for l := range strings.Lines(string(b)) {
		f := strings.Fields(l)
		if len(f) != 3 || f[2] != "kB" {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v * 1024
		case "VmHWM:":
			hwm = v * 1024
		}
	}
	if rss == 0 {
		return 0, 0, errors.New("no VmRSS in /proc status")
	}
	return rss, hwm, nil
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the module: run from the repository root")
	}
	return filepath.Dir(gomod), nil
}

// --- processes ---

// proc is a child process whose output lines go to a callback and are kept
// (the last few) for error messages.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and its output is read

	mu   sync.Mutex
	tail []string
}

func startProc(name string, args ...string) (*proc, error) {
	return startProcLines(name, args, nil)
}

func startProcLines(name string, args []string, onLine func(time.Time, string)) (*proc, error) {
	p := &proc{cmd: exec.Command(name, args...), done: make(chan struct{})}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	if err := p.cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	pw.Close()
	go func() {
		defer close(p.done)
		p.read(pr, onLine)
		pr.Close()
		_ = p.cmd.Wait()
	}()
	return p, nil
}

func (p *proc) read(r io.Reader, onLine func(time.Time, string)) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		at := time.Now()
		if onLine != nil {
			onLine(at, sc.Text())
		}
		p.mu.Lock()
		p.tail = append(p.tail, sc.Text())
		if len(p.tail) > 20 {
			p.tail = p.tail[1:]
		}
		p.mu.Unlock()
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.tail, "\n")
}

// stop sends SIGTERM, and SIGKILL if the process is still there after timeout.
func (p *proc) stop(timeout time.Duration) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// --- helpers ---

// waitUntil waits until cond holds, re-checking whenever changed (if set)
// fires and at least every 10 ms, for at most timeout.
func waitUntil(timeout time.Duration, changed func() <-chan struct{}, cond func() bool) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	for {
		var ch <-chan struct{}
		if changed != nil {
			ch = changed()
		}
		if cond() {
			return nil
		}
		select {
		case <-ch:
		case <-poll.C:
		case <-deadline.C:
			return fmt.Errorf("not within %v", timeout)
		}
	}
}

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

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "?"
	}
	for l := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r == '-' || r == '=' || r == '.' || r == '/' || r == ':' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond)) }

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}
