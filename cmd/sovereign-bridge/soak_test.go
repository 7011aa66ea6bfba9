//go:build integration

package main

// The soak test: the real daemon for a long while under mixed traffic and
// recurring faults, watched for lost or doubled messages and for a trend in
// its memory and open files. It is skipped unless -soak is given:
//
//	go test -tags integration ./cmd/sovereign-bridge/ -run '^TestSoak$' -count=1 -v -soak 10m
//
// (-v shows the progress lines and the summary. go test stops a test
// binary after -timeout, 10m by default; a soak that would not fit is
// shortened and says so, so add -timeout 0 for runs of 8 minutes or more.
// The other settings are the -soak.* flags below.)
//
// The set-up is TestSIGKILL's: the binary built by TestMain, a simulated
// radio (internal/meshsim) served over TCP and reached with --device
// tcp://, a real Prosody (internal/xmpptest), --text-interval 100ms against
// the radio's 50 ms text rule, a state directory on disk, and
// --metrics-listen so /metrics can be scraped. The radio uses the
// ShortTurbo preset so that hours of room traffic stay within the bridge's
// airtime budget (EU_868, half of 10 % of an hour); with LongFast the budget,
// not the bridge, would be what is measured. The room is made persistent,
// as a village's room would be: Prosody then keeps it, and its archive,
// across a restart. (A room that is not persistent is recreated empty, the
// bridge cannot find where it left off in the new archive, and what was said
// before it was back is not sent to the mesh: it says so in a warning.
// -soak.persistent-room=false shows it.)
//
// Throughout, the radio hears a mesh text every -soak.mesh-every (from the
// demo's three nodes in turn), and a second occupant, alice, says something
// in the room every -soak.room-every. Every -soak.fault-every one fault, in
// turn (-soak.faults):
//
//   - radio: the radio's TCP connection is closed on the radio's side; the
//     bridge reconnects and handshakes again;
//   - xmpp: Prosody is stopped for -soak.xmpp-down and started again; alice
//     dials again and rejoins (asking for the room's history, so that what
//     the bridge posted before she was back is seen; messages are told
//     apart by the room's stanza-id, so a replay is not a duplicate);
//   - kill: the bridge is SIGKILLed, and started again after -soak.kill-down.
//
// Every -soak.report-every a line gives the counts so far and the daemon's
// VmRSS, VmHWM, open fds and goroutines. At the end the traffic stops, the
// test waits (at most -soak.drain) for everything owed to arrive, and
// asserts:
//
//   - no mesh text shows twice in the room, no room message reaches the
//     radio twice (the simulated radio, like the firmware, drops a resend of
//     a packet id it has just taken, so only a new packet counts);
//   - every room message the room reflected to alice reached the radio;
//   - every mesh text the radio handed to the bridge reached the room,
//     except those heard less than 1 s before a SIGKILL (or while the killed
//     bridge's connection was going away): those are reported separately.
//
// It ends with summary tables meant to be pasted into a README.

import (
	"context"
	"encoding/xml"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"github.com/jshiffer/lora-xmpp-bridge/internal/bench/benchkit"
	"github.com/jshiffer/lora-xmpp-bridge/internal/meshsim"
	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
	"github.com/jshiffer/lora-xmpp-bridge/internal/xmpptest"
	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
)

var (
	soakFor         = flag.Duration("soak", 0, "run TestSoak for this long (e.g. 10m); 0 skips it")
	soakFaultEvery  = flag.Duration("soak.fault-every", 0, "time between faults; 0 is 60s, or a quarter of -soak when that is shorter, so that a short run sees each fault")
	soakFaultKinds  = flag.String("soak.faults", "radio,xmpp,kill", "faults to take turns, comma-separated: radio (TCP connection to the radio dropped), xmpp (Prosody stopped and started), kill (bridge SIGKILLed and restarted); none for none")
	soakReportEvery = flag.Duration("soak.report-every", 30*time.Second, "how often to print a progress line")
	soakMeshEvery   = flag.Duration("soak.mesh-every", 500*time.Millisecond, "spacing of the mesh texts the simulated radio hears")
	soakRoomEvery   = flag.Duration("soak.room-every", time.Second, "spacing of the room messages the second occupant says")
	soakXMPPDown    = flag.Duration("soak.xmpp-down", 5*time.Second, "how long Prosody stays stopped in an xmpp fault")
	soakKillDown    = flag.Duration("soak.kill-down", 2*time.Second, "how long the bridge stays dead in a kill fault")
	soakDrain       = flag.Duration("soak.drain", 2*time.Minute, "after the traffic, how long to wait at most for everything owed to arrive")
	soakPersistent  = flag.Bool("soak.persistent-room", true, "make the room persistent, so that it and its archive survive a restart of Prosody; with false, Prosody recreates the room empty and what alice says before the bridge is back is lost")
	soakLogDir      = flag.String("soak.log-dir", "", "also write each daemon's whole log to DIR/bridge-N.log")
)

const (
	soakRisk    = time.Second      // mesh texts heard this close before a kill are not owed
	soakRecover = 90 * time.Second // a fault not recovered from within this fails the test
	soakSettle  = 3 * time.Second  // after the drain, time for late duplicates to show
	soakMargin  = 45 * time.Second // set-up, a last fault's overrun and tear-down, within go test's -timeout
)

var soakTokenRE = regexp.MustCompile(`soak ([mr])-(\d{6})`)

func soakText(kind byte, i int) string { return fmt.Sprintf("soak %c-%06d", kind, i) }

// soakToken finds a soak token in s: its kind ('m' mesh, 'r' room) and index.
func soakToken(s string) (byte, int, bool) {
	m := soakTokenRE.FindStringSubmatch(s)
	if m == nil {
		return 0, 0, false
	}
	i, _ := strconv.Atoi(m[2])
	return m[1][0], i, true
}

// soakFault is one fault and how long the bridge took to be back.
type soakFault struct {
	kind      string
	at        time.Time
	recovered time.Duration // from the end of the deliberate outage to back in service
	ok        bool
}

// soakWindow is a span in which mesh texts heard are not owed.
type soakWindow struct{ from, to time.Time }

// soakSample is one reading of the daemon's resources.
type soakSample struct {
	at                time.Time
	rss, hwm          int64
	fds               int
	goroutines, spool float64 // from /metrics; -1 when the scrape failed
	heap              float64 // go_memstats_heap_inuse_bytes
}

// soakLog takes a bridge's stderr: it keeps the last lines and counts what
// the test waits for, without keeping the whole log in memory.
type soakLog struct {
	mu          sync.Mutex
	partial     []byte
	tail        []string
	joined      int // "joined room" lines
	warn, errs  int
	metricsAddr string
}

func (l *soakLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := slices.Index(l.partial, '\n')
		if i < 0 {
			break
		}
		line := string(l.partial[:i])
		l.partial = l.partial[i+1:]
		switch {
		case strings.Contains(line, "level=ERROR"):
			l.errs++
		case strings.Contains(line, "level=WARN"):
			l.warn++
		}
		if strings.Contains(line, "joined room") {
			l.joined++
		}
		if m := metricsRE.FindStringSubmatch(line); m != nil {
			l.metricsAddr = m[1]
		}
		l.tail = append(l.tail, line)
		if len(l.tail) > 60 {
			l.tail = l.tail[1:]
		}
	}
	return len(p), nil
}

func (l *soakLog) Joined() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.joined
}

func (l *soakLog) Addr() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.metricsAddr
}

func (l *soakLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.tail, "\n")
}

// soakProc is one run of the daemon, from start to its end.
type soakProc struct {
	n       int // 1, 2, ... in the order started
	cmd     *exec.Cmd
	logs    *soakLog
	started time.Time
	done    chan struct{} // closed when it has exited
	killed  atomic.Bool   // SIGKILLed by the test
	stopped atomic.Bool   // SIGINTed by the test at the end

	mu      sync.Mutex
	ended   time.Time
	exitErr error
	samples []soakSample
}

func (p *soakProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// soakRadioServer serves the simulated radio on TCP, one client at a time
// like the firmware, and can drop the current connection.
type soakRadioServer struct {
	radio *meshsim.Radio
	ln    net.Listener
	wg    sync.WaitGroup

	mu  sync.Mutex
	cur net.Conn
}

func (s *soakRadioServer) serve(ctx context.Context) {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.cur != nil {
			s.cur.Close() // a new client replaces the old one
		}
		s.cur = c
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			_ = s.radio.Serve(ctx, c)
		}()
	}
}

// drop closes the radio's side of the current connection.
func (s *soakRadioServer) drop() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		return false
	}
	s.cur.Close()
	s.cur = nil
	return true
}

func (s *soakRadioServer) close() {
	s.ln.Close()
	s.mu.Lock()
	if s.cur != nil {
		s.cur.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// soakRoomMsg is a message alice said (Say returned no error).
type soakRoomMsg struct {
	id string // its id and origin-id
	at time.Time
}

type soakRun struct {
	t      *testing.T
	radio  *meshsim.Radio
	rs     *soakRadioServer
	srv    *xmpptest.Server
	room   string
	dir    string
	args   []string
	start  time.Time
	scrape *http.Client

	mu         sync.Mutex
	meshAt     []time.Time   // mesh text i handed to the bridge; zero: Inject failed
	meshNoLink int           // mesh texts the radio had no client for
	said       []soakRoomMsg // room message i; no id: not said
	notSaid    int           // alice away (server down)
	sayErr     int
	nMesh      int // mesh texts handed over
	nSaid      int // room messages said
	alices     []*xmpptest.Client
	alice      *xmpptest.Client // nil while the server is down
	bridge     *soakProc        // nil while killed
	procs      []*soakProc
	faults     []soakFault
	risky      []soakWindow
	radioAt    map[int]time.Time // room message i first taken by the radio
}

func TestSoak(t *testing.T) {
	if *soakFor <= 0 {
		t.Skip("soak test: go test -tags integration ./cmd/sovereign-bridge/ -run '^TestSoak$' -count=1 -v -timeout 0 -soak 10m")
	}
	if *soakReportEvery <= 0 || *soakMeshEvery <= 0 || *soakRoomEvery <= 0 || *soakDrain <= 0 || *soakXMPPDown < 0 || *soakKillDown < 0 || *soakFaultEvery < 0 {
		t.Fatal("the -soak.* durations must be positive")
	}
	var kinds []string
	for k := range strings.SplitSeq(*soakFaultKinds, ",") {
		switch k = strings.TrimSpace(k); k {
		case "radio", "xmpp", "kill":
			kinds = append(kinds, k)
		case "", "none":
		default:
			t.Fatalf("-soak.faults: unknown fault %q (want radio, xmpp, kill or none)", k)
		}
	}
	soak := *soakFor
	var note string
	deadline, hasDeadline := t.Deadline()
	if hasDeadline {
		// The drain usually takes seconds: keep half a minute for it here,
		// and cut it short, rather than the soak, if it needs more.
		if room := time.Until(deadline) - min(*soakDrain, 30*time.Second) - soakSettle - soakMargin; room < soak {
			if room < 30*time.Second {
				t.Fatalf("go test's -timeout leaves %v: too little for -soak %v and -soak.drain %v; add -timeout 0", time.Until(deadline).Round(time.Second), soak, *soakDrain)
			}
			note = fmt.Sprintf("shortened from %v to fit go test's -timeout; add -timeout 0 for the full run", soak)
			soak = room.Truncate(time.Second)
			t.Logf("-soak %s", note)
		}
	}
	faultEvery := *soakFaultEvery
	if faultEvery == 0 {
		faultEvery = min(time.Minute, soak/4)
	}

	srv := xmpptest.StartProsody(t, xmpptest.WithAccount("bridge", "bridge-pw"), xmpptest.WithAccount("alice", "alice-pw"))
	s := &soakRun{
		t: t, srv: srv, room: "village@" + srv.MUCDomain, dir: t.TempDir(),
		scrape:  &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
		radioAt: map[int]time.Time{},
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.dialAlice(ctx, false); err != nil {
		t.Fatal(err)
	}
	if *soakPersistent {
		if err := soakMakePersistent(ctx, s.alice, s.room); err != nil {
			t.Fatalf("making the room persistent: %v", err)
		}
	}

	simCfg := meshsim.Demo()
	simCfg.TrafficInterval, simCfg.TextRule = 0, 50*time.Millisecond
	simCfg.Preset = meshpb.Config_LoRaConfig_SHORT_TURBO
	s.radio = meshsim.New(simCfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.rs = &soakRadioServer{radio: s.radio, ln: ln}
	s.rs.wg.Add(1)
	go s.rs.serve(ctx)
	defer s.rs.close()

	pw := filepath.Join(s.dir, "pw")
	if err := os.WriteFile(pw, []byte("bridge-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.args = []string{"--device", "tcp://" + ln.Addr().String(), "--mqtt-listen", "off", "--metrics-listen", "127.0.0.1:0",
		"--state-dir", filepath.Join(s.dir, "state"), "--text-interval", "100ms",
		"-j", "bridge@" + srv.Domain, "--password-file", pw, "-r", s.room, "-n", "meshbridge", "--xmpp-server", srv.Addr}
	defer func() { // whatever happens, no daemon outlives the test
		s.mu.Lock()
		procs := slices.Clone(s.procs)
		s.mu.Unlock()
		for _, p := range procs {
			if !p.exited() {
				p.cmd.Process.Kill()
				<-p.done
			}
		}
	}()

	params, _ := mesh.LoRaParamsOf(&meshpb.Config_LoRaConfig{UsePreset: true, ModemPreset: simCfg.Preset, Region: simCfg.Region})
	onAir := mesh.TimeOnAir(params, mesh.TextPacketBytes(len("alice: "+soakText('r', 0))))
	fmt.Println()
	fmt.Println("SovereignRelay soak test")
	fmt.Printf("  date:      %s\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Printf("  machine:   %s\n", benchkit.Machine())
	fmt.Printf("  go:        %s\n", runtime.Version())
	fmt.Printf("  prosody:   %s\n", benchkit.ProsodyVersion())
	fmt.Printf("  command:   %s\n", benchkit.TestCommand("./cmd/sovereign-bridge/"))
	fmt.Printf("  daemon:    SSL_CERT_FILE=<throwaway CA> sovereign-bridge %s\n", strings.Join(s.args, " "))
	fmt.Printf("  radio:     simulated, over TCP; %s %s, text rule %v; a room message is %v on air\n",
		simCfg.Region, mesh.PresetName(simCfg.Preset), simCfg.TextRule, onAir.Round(100*time.Microsecond))
	fmt.Printf("  room:      %s, persistent %v; a second occupant, alice\n", s.room, *soakPersistent)
	soakLine := fmt.Sprintf("%v", soak)
	if note != "" {
		soakLine += " (" + note + ")"
	}
	fmt.Printf("  soak:      %s; a mesh text every %v, a room message every %v\n", soakLine, *soakMeshEvery, *soakRoomEvery)
	if len(kinds) > 0 {
		var downs []string
		if slices.Contains(kinds, "xmpp") {
			downs = append(downs, fmt.Sprintf("Prosody down %v", *soakXMPPDown))
		}
		if slices.Contains(kinds, "kill") {
			downs = append(downs, fmt.Sprintf("bridge dead %v", *soakKillDown))
		}
		line := fmt.Sprintf("every %v, in turn: %s", faultEvery, strings.Join(kinds, ", "))
		if len(downs) > 0 {
			line += " (" + strings.Join(downs, ", ") + ")"
		}
		fmt.Printf("  faults:    %s\n", line)
	} else {
		fmt.Printf("  faults:    none\n")
	}
	fmt.Println()

	// The first bridge, up on both sides before the traffic starts.
	s.start = time.Now()
	hs := s.radio.Handshakes()
	p := s.startBridge()
	if _, ok := s.waitFor(soakRecover, func() bool {
		return s.radio.Handshakes() > hs && s.radio.Ready() && p.logs.Joined() > 0
	}); !ok {
		t.Fatalf("the bridge never reached both the radio and the room\n%s", p.logs)
	}

	// The traffic, and what the radio takes, in the background.
	trafficCtx, stopTraffic := context.WithCancel(ctx)
	var traffic sync.WaitGroup
	traffic.Add(2)
	go func() { defer traffic.Done(); s.meshTraffic(trafficCtx) }()
	go func() { defer traffic.Done(); s.roomTraffic(trafficCtx) }()
	watchCtx, stopWatch := context.WithCancel(ctx)
	var watchers sync.WaitGroup
	watchers.Add(2)
	go func() { defer watchers.Done(); s.watchRadio(watchCtx) }()
	reporterDone := make(chan struct{})
	go func() { defer watchers.Done(); s.report(watchCtx, reporterDone) }()

	end := s.start.Add(soak)
	next := s.start.Add(faultEvery)
	failed := false
	for k := 0; !failed && time.Now().Before(end); {
		wake := end
		if len(kinds) > 0 && next.Before(end) {
			wake = next
		}
		s.mu.Lock()
		cur := s.bridge // never nil here: a kill fault restarts it before returning
		s.mu.Unlock()
		select {
		case <-time.After(time.Until(wake)):
		case <-cur.done:
		}
		if cur.exited() && !cur.killed.Load() {
			failed = true // reported with the summary
			break
		}
		if len(kinds) == 0 || time.Now().Before(next) || !next.Before(end) {
			continue
		}
		if time.Until(end) < faultEvery/4 {
			next = end // too late for the bridge to show it is back before the end
			continue
		}
		kind := kinds[k%len(kinds)]
		k++
		f := s.fault(kind)
		if !f.ok {
			failed = true
		}
		// On schedule, but never sooner than a quarter interval after recovery.
		next = next.Add(faultEvery)
		if soon := time.Now().Add(faultEvery / 4); next.Before(soon) {
			next = soon
		}
	}
	elapsed := time.Since(s.start)
	stopTraffic()
	traffic.Wait()

	// Everything owed arrives, then nothing more for a while.
	drainStart := time.Now()
	drain := *soakDrain
	if hasDeadline {
		drain = max(min(drain, time.Until(deadline)-soakSettle-soakMargin), 10*time.Second)
	}
	if !failed {
		_, ok := s.waitFor(drain, func() bool {
			mMissing, rMissing := s.missing()
			return len(mMissing) == 0 && len(rMissing) == 0 && s.quiet()
		})
		if !ok {
			t.Logf("drain: not everything owed arrived within %v", drain.Round(time.Second))
		}
		time.Sleep(soakSettle)
	}
	drained := time.Since(drainStart)
	s.mu.Lock()
	last := s.bridge
	s.mu.Unlock()
	if last != nil && !last.exited() {
		s.sample(last)
	}
	stopWatch()
	<-reporterDone
	watchers.Wait()

	// The last bridge stops cleanly.
	if last != nil && !last.exited() {
		last.stopped.Store(true)
		last.cmd.Process.Signal(os.Interrupt)
		select {
		case <-last.done:
			if last.exitErr != nil {
				t.Errorf("bridge #%d after SIGINT: %v\n%s", last.n, last.exitErr, last.logs)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("bridge #%d did not stop within 20s of SIGINT\n%s", last.n, last.logs)
		}
	}
	s.summarize(elapsed, drained)
}

// startBridge starts a daemon; it becomes the current bridge.
func (s *soakRun) startBridge() *soakProc {
	cmd := exec.Command(binary, s.args...)
	cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+s.srv.CAFile)
	logs := &soakLog{}
	cmd.Stderr = logs
	s.mu.Lock()
	n := len(s.procs) + 1
	s.mu.Unlock()
	var logFile *os.File
	if *soakLogDir != "" {
		f, err := os.Create(filepath.Join(*soakLogDir, fmt.Sprintf("bridge-%d.log", n)))
		if err != nil {
			s.t.Fatal(err)
		}
		logFile = f
		cmd.Stderr = io.MultiWriter(logs, f)
	}
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	p := &soakProc{cmd: cmd, logs: logs, started: time.Now(), done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		if logFile != nil {
			logFile.Close()
		}
		p.mu.Lock()
		p.ended, p.exitErr = time.Now(), err
		p.mu.Unlock()
		close(p.done)
	}()
	s.mu.Lock()
	p.n = n
	s.procs = append(s.procs, p)
	s.bridge = p
	s.mu.Unlock()
	return p
}

// dialAlice connects alice and joins the room, retrying for a while (the
// server may just have started). With history she gets what the room said
// while she was away.
func (s *soakRun) dialAlice(ctx context.Context, history bool) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := xmpptest.TryDial(s.t, s.srv, "alice", "alice-pw")
		if err == nil {
			s.mu.Lock()
			s.alices = append(s.alices, c) // what it receives counts, joined or not
			s.mu.Unlock()
			jctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if history {
				err = c.JoinWithHistory(jctx, s.room, "alice")
			} else {
				err = c.Join(jctx, s.room, "alice")
			}
			cancel()
			if err == nil {
				s.mu.Lock()
				s.alice = c
				s.mu.Unlock()
				return nil
			}
			c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("alice could not rejoin %s: %w", s.room, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitFor polls cond for at most timeout, and returns when it was first
// seen to hold.
func (s *soakRun) waitFor(timeout time.Duration, cond func() bool) (time.Time, bool) {
	if !testutil.Poll(context.Background(), timeout, cond) {
		return time.Time{}, false
	}
	return time.Now(), true
}

// fault breaks one thing and waits until the bridge is back in service.
func (s *soakRun) fault(kind string) soakFault {
	f := soakFault{kind: kind, at: time.Now()}
	s.mu.Lock()
	p := s.bridge
	s.mu.Unlock()
	fail := func(format string, args ...any) soakFault {
		s.t.Errorf("%s fault at %v: "+format, append([]any{kind, f.at.Sub(s.start).Round(time.Second)}, args...)...)
		s.mu.Lock()
		s.faults = append(s.faults, f)
		s.mu.Unlock()
		return f
	}
	var back time.Time // end of the deliberate outage
	var ok bool
	switch kind {
	case "radio":
		hs := s.radio.Handshakes()
		if !s.rs.drop() {
			return fail("no radio connection to drop")
		}
		back = time.Now()
		_, ok = s.waitFor(soakRecover, func() bool { return s.radio.Handshakes() > hs && s.radio.Ready() })
		if !ok {
			return fail("the bridge did not handshake with the radio again within %v\n%s", soakRecover, p.logs)
		}
	case "xmpp":
		joined := p.logs.Joined()
		s.mu.Lock()
		s.alice = nil
		s.mu.Unlock()
		s.srv.Stop()
		time.Sleep(*soakXMPPDown)
		s.srv.Start()
		back = time.Now()
		if err := s.dialAlice(context.Background(), true); err != nil {
			return fail("%v", err)
		}
		_, ok = s.waitFor(soakRecover, func() bool { return p.logs.Joined() > joined })
		if !ok {
			return fail("the bridge did not rejoin the room within %v\n%s\n%s", soakRecover, p.logs, s.srv.LogTail(20))
		}
	case "kill":
		p.killed.Store(true)
		p.cmd.Process.Kill()
		<-p.done
		s.mu.Lock()
		s.bridge = nil
		s.mu.Unlock()
		time.Sleep(*soakKillDown)
		hs := s.radio.Handshakes()
		back = time.Now()
		np := s.startBridge()
		var linked time.Time
		linked, ok = s.waitFor(soakRecover, func() bool { return s.radio.Handshakes() > hs && s.radio.Ready() })
		// Texts heard shortly before the kill, or handed to the dying
		// connection, may be lost with the process.
		s.mu.Lock()
		s.risky = append(s.risky, soakWindow{f.at.Add(-soakRisk), linked})
		s.mu.Unlock()
		if !ok {
			s.mu.Lock()
			s.risky[len(s.risky)-1].to = time.Now().Add(time.Hour)
			s.mu.Unlock()
			return fail("the restarted bridge did not reach the radio within %v\n%s", soakRecover, np.logs)
		}
		_, ok = s.waitFor(soakRecover, func() bool { return np.logs.Joined() > 0 })
		if !ok {
			return fail("the restarted bridge did not join the room within %v\n%s", soakRecover, np.logs)
		}
	}
	f.ok, f.recovered = true, time.Since(back)
	s.mu.Lock()
	s.faults = append(s.faults, f)
	s.mu.Unlock()
	return f
}

// meshTraffic makes the radio hear a text every -soak.mesh-every.
func (s *soakRun) meshTraffic(ctx context.Context) {
	peers := s.radio.Config().Peers
	tick := time.NewTicker(*soakMeshEvery)
	defer tick.Stop()
	for i := 0; ; {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		// Each attempt has its own text, so that one whose Inject failed
		// half-way cannot pass for a duplicate of the next.
		pkt := s.radio.TextPacket(peers[i%len(peers)].Num, soakText('m', i))
		i++
		injected := s.radio.Inject(pkt)
		var at time.Time
		if injected {
			at = time.Now()
		}
		s.mu.Lock()
		s.meshAt = append(s.meshAt, at)
		if injected {
			s.nMesh++
		} else {
			s.meshNoLink++
		}
		s.mu.Unlock()
	}
}

// roomTraffic makes alice say something every -soak.room-every.
func (s *soakRun) roomTraffic(ctx context.Context) {
	tick := time.NewTicker(*soakRoomEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		// As for the mesh, each attempt has its own text.
		s.mu.Lock()
		alice, n := s.alice, len(s.said)
		s.said = append(s.said, soakRoomMsg{})
		s.mu.Unlock()
		away := alice == nil
		if !away {
			select {
			case <-alice.Done():
				away = true
			default:
			}
		}
		if away {
			s.mu.Lock()
			s.notSaid++
			s.mu.Unlock()
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		id, err := alice.Say(sctx, s.room, soakText('r', n))
		cancel()
		s.mu.Lock()
		if err != nil {
			s.sayErr++
		} else {
			s.said[n] = soakRoomMsg{id: id, at: time.Now()}
			s.nSaid++
		}
		s.mu.Unlock()
	}
}

// watchRadio notes when the radio first took each room message.
func (s *soakRun) watchRadio(ctx context.Context) {
	seen := 0
	for {
		ch := s.radio.Changed()
		got := s.radio.Received()
		now := time.Now()
		for _, p := range got[seen:] {
			body, ok := strings.CutPrefix(string(p.GetDecoded().GetPayload()), "alice: ")
			if !ok {
				continue
			}
			if kind, i, ok := soakToken(body); ok && kind == 'r' {
				s.mu.Lock()
				if _, dup := s.radioAt[i]; !dup {
					s.radioAt[i] = now
				}
				s.mu.Unlock()
			}
		}
		seen = len(got)
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

// soakRoomView is what the room showed alice, across her sessions.
type soakRoomView struct {
	mesh      map[int]map[string]bool // mesh text -> the room's stanza-ids of its postings
	meshFirst map[int]time.Time
	confirmed map[string]bool // origin-ids of alice's messages the room reflected
	echoes    int             // room messages the bridge posted back to the room
	others    []string        // other postings of the bridge (refusals, notices)
}

func (s *soakRun) roomView() soakRoomView {
	s.mu.Lock()
	alices := slices.Clone(s.alices)
	s.mu.Unlock()
	v := soakRoomView{mesh: map[int]map[string]bool{}, meshFirst: map[int]time.Time{}, confirmed: map[string]bool{}}
	for ci, c := range alices {
		for mi, m := range c.Messages() {
			if m.Body == "" || m.Room != s.room {
				continue
			}
			if m.Nick == "alice" {
				if m.OriginID != "" {
					v.confirmed[m.OriginID] = true
				}
				continue
			}
			kind, i, ok := soakToken(m.Body)
			switch {
			case !ok:
				v.others = append(v.others, m.Nick+": "+m.Body)
			case kind == 'r':
				v.echoes++
			default:
				key := m.StanzaID
				if key == "" { // never seen from Prosody; counted apart, not merged
					key = fmt.Sprintf("nostanzaid-%d-%d", ci, mi)
				}
				if v.mesh[i] == nil {
					v.mesh[i] = map[string]bool{}
				}
				v.mesh[i][key] = true
				if t, ok := v.meshFirst[i]; !ok || m.Received.Before(t) {
					v.meshFirst[i] = m.Received
				}
			}
		}
	}
	return v
}

// radioView counts what the radio took: room messages by index, and
// anything else (mesh texts sent back to the mesh, unknown texts).
func (s *soakRun) radioView() (room map[int]int, echoes, others int) {
	room = map[int]int{}
	for _, p := range s.radio.Received() {
		if p.GetDecoded().GetPortnum() != meshpb.PortNum_TEXT_MESSAGE_APP {
			continue
		}
		body := string(p.GetDecoded().GetPayload())
		kind, i, ok := soakToken(body)
		switch {
		case ok && kind == 'r' && strings.HasPrefix(body, "alice: "):
			room[i]++
		case ok && kind == 'm':
			echoes++
		default:
			others++
		}
	}
	return room, echoes, others
}

// owed reports whether mesh text i, handed over at at, must reach the room.
func (s *soakRun) owedLocked(at time.Time) bool {
	for _, w := range s.risky {
		if !at.Before(w.from) && !at.After(w.to) {
			return false
		}
	}
	return true
}

// missing lists the owed mesh texts not in the room and the confirmed room
// messages not on the radio.
func (s *soakRun) missing() (mesh, room []int) {
	v := s.roomView()
	onRadio, _, _ := s.radioView()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, at := range s.meshAt {
		if !at.IsZero() && len(v.mesh[i]) == 0 && s.owedLocked(at) {
			mesh = append(mesh, i)
		}
	}
	for i, m := range s.said {
		if m.id != "" && v.confirmed[m.id] && onRadio[i] == 0 {
			room = append(room, i)
		}
	}
	return mesh, room
}

// quiet reports whether the current bridge has nothing waiting.
func (s *soakRun) quiet() bool {
	s.mu.Lock()
	p := s.bridge
	s.mu.Unlock()
	if p == nil {
		return false
	}
	m := s.metrics(p)
	if m == nil {
		return false
	}
	return m["sovereign_bridge_spool_depth"] == 0 && m["sovereign_bridge_queue_depth"] == 0
}

// metrics scrapes /metrics of p, summing the series of each name.
func (s *soakRun) metrics(p *soakProc) map[string]float64 {
	addr := p.logs.Addr()
	if addr == "" {
		return nil
	}
	resp, err := s.scrape.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil
	}
	out := map[string]float64{}
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, ok := strings.Cut(line, " ")
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			name, rest, ok = line[:i], line[j+1:], j > i
		}
		if !ok {
			continue
		}
		if f := strings.Fields(rest); len(f) > 0 {
			if v, err := strconv.ParseFloat(f[0], 64); err == nil {
				out[name] += v
			}
		}
	}
	return out
}

// sample reads p's memory, open fds and goroutines, and keeps the reading.
func (s *soakRun) sample(p *soakProc) (soakSample, bool) {
	pid := p.cmd.Process.Pid
	rss, hwm, err := benchkit.ProcStatus(pid)
	if err != nil {
		return soakSample{}, false
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return soakSample{}, false
	}
	smp := soakSample{at: time.Now(), rss: rss, hwm: hwm, fds: len(fds), goroutines: -1, spool: -1}
	if m := s.metrics(p); m != nil {
		smp.goroutines, smp.spool = m["go_goroutines"], m["sovereign_bridge_spool_depth"]+m["sovereign_bridge_queue_depth"]
		smp.heap = m["go_memstats_heap_inuse_bytes"]
	}
	if p.exited() {
		return soakSample{}, false // the pid may be gone or reused
	}
	p.mu.Lock()
	p.samples = append(p.samples, smp)
	p.mu.Unlock()
	return smp, true
}

// report samples the bridge every few seconds and prints a progress line
// every -soak.report-every.
func (s *soakRun) report(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	every := min(5*time.Second, *soakReportEvery)
	tick := time.NewTicker(every)
	defer tick.Stop()
	nextLine := s.start.Add(*soakReportEvery)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s.mu.Lock()
		p := s.bridge
		s.mu.Unlock()
		var smp soakSample
		ok := p != nil && !p.exited()
		if ok {
			smp, ok = s.sample(p)
		}
		if time.Now().Before(nextLine) {
			continue
		}
		nextLine = nextLine.Add(*soakReportEvery)
		fmt.Println(s.progress(p, smp, ok))
	}
}

func (s *soakRun) progress(p *soakProc, smp soakSample, ok bool) string {
	v := s.roomView()
	onRadio, _, _ := s.radioView()
	s.mu.Lock()
	injected, said := s.nMesh, s.nSaid
	nf := len(s.faults)
	var fk []string
	for _, k := range []string{"radio", "xmpp", "kill"} {
		n := 0
		for _, f := range s.faults {
			if f.kind == k {
				n++
			}
		}
		if n > 0 {
			fk = append(fk, fmt.Sprintf("%s %d", k, n))
		}
	}
	s.mu.Unlock()
	inRoom, roomDup := 0, 0
	for _, ids := range v.mesh {
		inRoom++
		roomDup += len(ids) - 1
	}
	radioGot, radioDup := 0, 0
	for _, n := range onRadio {
		radioGot++
		radioDup += n - 1
	}
	line := fmt.Sprintf("soak %7s  mesh %d in, %d in room, %d dup | room %d said, %d on radio, %d dup | faults %d",
		soakDur(time.Since(s.start)), injected, inRoom, roomDup, said, radioGot, radioDup, nf)
	if len(fk) > 0 {
		line += " (" + strings.Join(fk, ", ") + ")"
	}
	if !ok {
		return line + " | bridge down"
	}
	line += fmt.Sprintf(" | bridge #%d pid %d up %s: VmRSS %s VmHWM %s fds %d",
		p.n, p.cmd.Process.Pid, soakDur(time.Since(p.started)), benchkit.MiB(smp.rss), benchkit.MiB(smp.hwm), smp.fds)
	if smp.goroutines >= 0 {
		line += fmt.Sprintf(" heap %s goroutines %.0f waiting %.0f", benchkit.MiB(int64(smp.heap)), smp.goroutines, smp.spool)
	}
	return line
}

// summarize asserts what the soak promises and prints the tables.
func (s *soakRun) summarize(elapsed, drained time.Duration) {
	t := s.t
	v := s.roomView()
	onRadio, radioEchoes, radioOthers := s.radioView()
	s.mu.Lock()
	defer s.mu.Unlock()

	// Mesh → room.
	var mSent, mRecv []time.Time
	mOwed, mGot, mRisky, mRiskyGot, mDup, mStray := 0, 0, 0, 0, 0, 0
	var mMissing, mDups []string
	for i, at := range s.meshAt {
		ids := len(v.mesh[i])
		if ids > 1 {
			mDup += ids - 1
			mDups = append(mDups, fmt.Sprintf("%s ×%d (heard at %v)", soakText('m', i), ids, at.Sub(s.start).Round(time.Millisecond)))
		}
		if at.IsZero() { // Inject failed
			if ids > 0 {
				mStray++
			}
			continue
		}
		if ids > 0 {
			mGot++
		}
		if s.owedLocked(at) {
			mOwed++
			if ids == 0 {
				mMissing = append(mMissing, fmt.Sprintf("%s (heard at %v)", soakText('m', i), at.Sub(s.start).Round(time.Millisecond)))
			}
		} else {
			mRisky++
			if ids > 0 {
				mRiskyGot++
			}
		}
		mSent = append(mSent, at)
		mRecv = append(mRecv, v.meshFirst[i]) // zero if missing
	}
	// Room → mesh.
	var rSent, rRecv []time.Time
	rOwed, rGot, rUnconf, rUnconfGot, rDup, rStray := 0, 0, 0, 0, 0, 0
	var rMissing, rDups []string
	for i, m := range s.said {
		n := onRadio[i]
		if n > 1 {
			rDup += n - 1
			rDups = append(rDups, fmt.Sprintf("%s ×%d (said at %v)", soakText('r', i), n, m.at.Sub(s.start).Round(time.Millisecond)))
		}
		if m.id == "" { // not said, or Say failed
			if n > 0 {
				rStray++
			}
			continue
		}
		if n > 0 {
			rGot++
		}
		if v.confirmed[m.id] {
			rOwed++
			if n == 0 {
				rMissing = append(rMissing, fmt.Sprintf("%s (said at %v)", soakText('r', i), m.at.Sub(s.start).Round(time.Millisecond)))
			}
		} else {
			rUnconf++
			if n > 0 {
				rUnconfGot++
			}
		}
		rSent = append(rSent, m.at)
		rRecv = append(rRecv, s.radioAt[i])
	}
	for i, n := range onRadio {
		if i >= len(s.said) {
			t.Errorf("the radio took %d× %q, which alice never said", n, soakText('r', i))
		}
	}
	for i := range v.mesh {
		if i >= len(s.meshAt) {
			t.Errorf("the room shows %q, which the radio never heard", soakText('m', i))
		}
	}
	if mStray > 0 || rStray > 0 {
		t.Logf("arrived although the test saw it fail: %d mesh texts (Inject error), %d room messages (Say error)", mStray, rStray)
	}
	for _, p := range s.procs {
		if !p.killed.Load() && !p.stopped.Load() && p.exited() {
			t.Errorf("bridge #%d exited by itself: %v\n%s", p.n, p.exitErr, p.logs)
		}
	}

	if mDup > 0 {
		t.Errorf("%d duplicate mesh texts in the room: %s", mDup, soakFirst(mDups, 20))
	}
	if rDup > 0 {
		t.Errorf("%d duplicate room messages on the radio: %s", rDup, soakFirst(rDups, 20))
	}
	if len(mMissing) > 0 {
		t.Errorf("%d of %d owed mesh texts never reached the room: %s", len(mMissing), mOwed, soakFirst(mMissing, 20))
	}
	if len(rMissing) > 0 {
		t.Errorf("%d of %d room messages never reached the radio: %s", len(rMissing), rOwed, soakFirst(rMissing, 20))
	}
	if radioEchoes > 0 {
		t.Errorf("%d mesh texts were sent back to the mesh", radioEchoes)
	}
	if v.echoes > 0 {
		t.Errorf("%d room messages were posted back to the room", v.echoes)
	}
	if len(v.others) > 0 {
		t.Logf("the bridge posted %d other messages in the room: %s", len(v.others), soakFirst(v.others, 5))
	}
	if radioOthers > 0 {
		t.Logf("the radio took %d other texts", radioOthers)
	}
	if mOwed == 0 || rOwed == 0 {
		t.Errorf("no traffic: %d mesh texts and %d room messages owed", mOwed, rOwed)
	}

	ml, rl := benchkit.Summarize(mSent, mRecv), benchkit.Summarize(rSent, rRecv)
	fmt.Println()
	fmt.Printf("SovereignRelay soak: %s of traffic, %d faults, %d bridge processes; drained in %s\n\n",
		soakDur(elapsed), len(s.faults), len(s.procs), soakDur(drained))
	fmt.Println("| direction | sent | arrived | owed | owed, missing | not owed (arrived) | duplicates | latency p50 | p99 | max |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	fmt.Printf("| mesh → room | %d | %d | %d | %d | %d (%d) | %d | %s | %s | %s |\n",
		s.nMesh, mGot, mOwed, len(mMissing), mRisky, mRiskyGot, mDup, soakLat(ml.P50), soakLat(ml.P99), soakLat(ml.Max))
	fmt.Printf("| room → mesh | %d | %d | %d | %d | %d (%d) | %d | %s | %s | %s |\n",
		s.nSaid, rGot, rOwed, len(rMissing), rUnconf, rUnconfGot, rDup, soakLat(rl.P50), soakLat(rl.P99), soakLat(rl.Max))
	fmt.Println()
	fmt.Printf("Sent: mesh texts the radio handed to the bridge (%d more found no bridge connected); room messages alice said\n", s.meshNoLink)
	fmt.Printf("(%d more not said while Prosody was down, %d Say errors). Owed: mesh texts heard at least %v before a SIGKILL;\n", s.notSaid, s.sayErr, soakRisk)
	fmt.Println("room messages the room reflected to alice. Latency: from the radio handing a text over, or alice saying it,")
	fmt.Println("to alice receiving it, or the radio taking it; outages included.")
	fmt.Println()

	if len(s.faults) > 0 {
		fmt.Println("| fault | count | recovered | back in service p50 | max |")
		fmt.Println("|---|---:|---:|---:|---:|")
		for _, k := range []struct{ kind, what string }{
			{"radio", "radio's TCP connection dropped"},
			{"xmpp", fmt.Sprintf("Prosody stopped for %v", *soakXMPPDown)},
			{"kill", fmt.Sprintf("bridge SIGKILLed, restarted after %v", *soakKillDown)},
		} {
			var ds []time.Duration
			n := 0
			for _, f := range s.faults {
				if f.kind != k.kind {
					continue
				}
				n++
				if f.ok {
					ds = append(ds, f.recovered)
				}
			}
			if n == 0 {
				continue
			}
			slices.Sort(ds)
			p50, mx := "–", "–"
			if len(ds) > 0 {
				p50, mx = soakLat(ds[(len(ds)-1)/2]), soakLat(ds[len(ds)-1])
			}
			fmt.Printf("| %s | %d | %d | %s | %s |\n", k.what, n, len(ds), p50, mx)
		}
		fmt.Println()
		fmt.Println("Back in service: from the end of the outage (connection dropped, Prosody started, bridge started)")
		fmt.Println("to the bridge's next radio handshake (radio, kill) and its rejoin of the room (xmpp, kill).")
		fmt.Println()
	}

	fmt.Println("| bridge | lived | ended | VmRSS first → last (max) | VmHWM | open fds first → last (max) | goroutines first → last (max) | log WARN / ERROR |")
	fmt.Println("|---:|---:|---|---:|---:|---:|---:|---:|")
	for _, p := range s.procs {
		p.mu.Lock()
		smps, ended, exitErr := slices.Clone(p.samples), p.ended, p.exitErr
		p.mu.Unlock()
		how := "running"
		switch {
		case p.killed.Load():
			how = "SIGKILL"
		case p.stopped.Load() && exitErr == nil:
			how = "SIGINT, exit 0"
		case p.stopped.Load():
			how = fmt.Sprintf("SIGINT, %v", exitErr)
		case !ended.IsZero():
			how = fmt.Sprintf("by itself: %v", exitErr)
		}
		if ended.IsZero() {
			ended = time.Now()
		}
		p.logs.mu.Lock()
		warn, errs := p.logs.warn, p.logs.errs
		p.logs.mu.Unlock()
		if len(smps) == 0 {
			fmt.Printf("| #%d | %s | %s | – | – | – | – | %d / %d |\n", p.n, soakDur(ended.Sub(p.started)), how, warn, errs)
			continue
		}
		first, lastS := smps[0], smps[len(smps)-1]
		var maxRSS int64
		maxFds, maxG := 0, -1.0
		for _, x := range smps {
			maxRSS, maxFds, maxG = max(maxRSS, x.rss), max(maxFds, x.fds), max(maxG, x.goroutines)
		}
		fmt.Printf("| #%d | %s | %s | %s → %s (%s) | %s | %d → %d (%d) | %.0f → %.0f (%.0f) | %d / %d |\n",
			p.n, soakDur(ended.Sub(p.started)), how,
			benchkit.MiB(first.rss), benchkit.MiB(lastS.rss), benchkit.MiB(maxRSS), benchkit.MiB(lastS.hwm),
			first.fds, lastS.fds, maxFds, first.goroutines, lastS.goroutines, maxG, warn, errs)
	}
	fmt.Println()
	fmt.Println("Sampled every 5 s from /proc/PID/status, /proc/PID/fd and /metrics (go_goroutines); first is the first sample")
	fmt.Println("after start, last the one after the drain (or before the SIGKILL).")
	fmt.Println()
}

// soakMakePersistent submits the room configuration form with
// muc#roomconfig_persistentroom set, as the room's owner.
func soakMakePersistent(ctx context.Context, c *xmpptest.Client, room string) error {
	roomJID, err := jid.Parse(room)
	if err != nil {
		return err
	}
	field := func(name, value string) xml.TokenReader {
		return xmlstream.Wrap(
			xmlstream.Wrap(xmlstream.Token(xml.CharData(value)), xml.StartElement{Name: xml.Name{Local: "value"}}),
			xml.StartElement{Name: xml.Name{Local: "field"}, Attr: []xml.Attr{{Name: xml.Name{Local: "var"}, Value: name}}},
		)
	}
	form := xmlstream.Wrap(
		xmlstream.MultiReader(
			field("FORM_TYPE", "http://jabber.org/protocol/muc#roomconfig"),
			field("muc#roomconfig_persistentroom", "1"),
		),
		xml.StartElement{Name: xml.Name{Space: "jabber:x:data", Local: "x"}, Attr: []xml.Attr{{Name: xml.Name{Local: "type"}, Value: "submit"}}},
	)
	query := xmlstream.Wrap(form, xml.StartElement{Name: xml.Name{Space: "http://jabber.org/protocol/muc#owner", Local: "query"}})
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return c.Session().UnmarshalIQElement(ctx, query, stanza.IQ{ID: "soak-config", To: roomJID.Bare(), Type: stanza.SetIQ}, nil)
}

func soakFirst(xs []string, n int) string {
	if len(xs) > n {
		return strings.Join(xs[:n], "; ") + fmt.Sprintf("; and %d more", len(xs)-n)
	}
	return strings.Join(xs, "; ")
}

// soakDur formats a duration to the second, or to the millisecond below 10 s.
func soakDur(d time.Duration) string {
	if d < 10*time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

func soakLat(d time.Duration) string {
	if d >= time.Second {
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
	return benchkit.Ms(d)
}
