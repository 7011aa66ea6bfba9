package main

// The brokers subcommand: the embedded broker against mosquitto, as the
// daemon's broker (latency) and as a plain MQTT server (throughput).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jshiffer/lora-xmpp-bridge/broker"
	"github.com/jshiffer/lora-xmpp-bridge/internal/bench/benchkit"
	"github.com/jshiffer/lora-xmpp-bridge/internal/meshsim"
	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

type brokersOptions struct {
	options // -n, -interval, -timeout of the latency series

	latency bool
	load    bool

	loadN      int
	loadSize   int
	loadWindow int
	loadSubs   []int
	loadQoS    []int
	loadRepeat int
	stateDir   string
}

func brokersMain(args []string) int {
	var o brokersOptions
	fs := flag.NewFlagSet("brokers", flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: go run ./internal/bench brokers [flags]\n\nThe embedded broker against mosquitto: latency through the daemon, throughput under a paho load.")
		fs.PrintDefaults()
	}
	fs.IntVar(&o.n, "n", 500, "messages per latency series")
	fs.DurationVar(&o.interval, "interval", 5*time.Millisecond, "spacing of the latency messages")
	fs.DurationVar(&o.timeout, "timeout", 20*time.Second, "deadline for each wait (readiness, last message, a stalled load, shutdown)")
	fs.BoolVar(&o.latency, "latency", true, "measure the latency through the daemon with each broker")
	fs.BoolVar(&o.load, "load", true, "measure the throughput of each broker under the same paho load")
	fs.IntVar(&o.loadN, "load-n", 20000, "messages published per throughput measurement")
	fs.IntVar(&o.loadSize, "load-size", 200, "payload bytes of each load message")
	fs.IntVar(&o.loadWindow, "load-window", 500, "most messages published but not yet received by every subscriber")
	fs.IntVar(&o.loadRepeat, "load-repeat", 3, "measurements of each broker in each case (the median is shown)")
	fs.StringVar(&o.stateDir, "state-dir", "", "where the daemons keep their state (spool) in the latency runs; default a temporary directory")
	subs := fs.String("load-subs", "1,10", "subscriber counts to measure, comma-separated")
	qos := fs.String("load-qos", "0,1", "QoS levels to measure, comma-separated (publish and subscription)")
	_ = fs.Parse(args)
	var err error
	// The embedded broker keeps at most 256 sockets open by default.
	if o.loadSubs, err = intList(*subs, 1, 200); err != nil {
		fmt.Fprintln(os.Stderr, "bench: -load-subs:", err)
		return 2
	}
	if o.loadQoS, err = intList(*qos, 0, 1); err != nil {
		fmt.Fprintln(os.Stderr, "bench: -load-qos:", err)
		return 2
	}
	// The payload carries a round and a message number (5 bytes); the
	// window must stay under the brokers' per-client queues (mosquitto
	// drops beyond max_queued_messages, 1000 by default).
	if o.n < 1 || o.interval <= 0 || o.timeout <= 0 || o.loadN < 1 || o.loadSize < 5 || o.loadWindow < 1 || o.loadWindow > 1000 || o.loadRepeat < 1 {
		fmt.Fprintln(os.Stderr, "bench: -n, -interval, -timeout, -load-n and -load-repeat must be positive, -load-size at least 5, -load-window 1 to 1000")
		return 2
	}
	if err := runBrokers(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	return 0
}

func intList(s string, lo, hi int) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v < lo || v > hi {
			return nil, fmt.Errorf("%q: want numbers from %d to %d", f, lo, hi)
		}
		out = append(out, v)
	}
	return out, nil
}

func runBrokers(o brokersOptions) error {
	if _, err := os.Stat(bin("mosquitto")); err != nil {
		return fmt.Errorf("mosquitto not found (apt-get install mosquitto mosquitto-clients): %w", err)
	}
	if _, err := os.Stat(bin("mosquitto_sub")); err != nil {
		return fmt.Errorf("mosquitto_sub not found (apt-get install mosquitto-clients): %w", err)
	}
	tmp, err := os.MkdirTemp("", "sovereign-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	settings := fmt.Sprintf("brokers -n %d -interval %v -latency=%t -load=%t -load-n %d -load-size %d -load-window %d -load-repeat %d -load-subs %s -load-qos %s",
		o.n, o.interval, o.latency, o.load, o.loadN, o.loadSize, o.loadWindow, o.loadRepeat, joinInts(o.loadSubs), joinInts(o.loadQoS))
	if o.stateDir != "" {
		settings += " -state-dir " + benchkit.ShellQuote(o.stateDir)
	}
	printHeader(settings)

	if o.latency {
		if err := brokerLatency(o, tmp); err != nil {
			return fmt.Errorf("latency: %w", err)
		}
	}
	if o.load {
		if err := brokerLoad(o, tmp); err != nil {
			return fmt.Errorf("throughput: %w", err)
		}
	}
	return nil
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

// --- latency through the daemon ---

// brokerLatency runs the daemon twice against a simulated radio in this
// process, once with its embedded broker and once with --mqtt-broker
// pointing at mosquitto, and times the same texts to mosquitto_sub lines.
func brokerLatency(o brokersOptions, tmp string) error {
	exe, err := benchkit.BuildDaemon(tmp)
	if err != nil {
		return err
	}
	mq, mqAddr, err := startMosquitto(filepath.Join(tmp, "mosquitto-latency.conf"), o.timeout)
	if err != nil {
		return err
	}
	defer mq.Stop(o.timeout)

	port, err := freePort()
	if err != nil {
		return err
	}
	embAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	legs := []struct {
		name, sub string
		args      []string
	}{
		{"embedded", embAddr, []string{"--mqtt-listen", embAddr}},
		{"mosquitto", mqAddr, []string{"--mqtt-broker", "mqtt://" + mqAddr}},
	}
	stateParent := tmp
	if o.stateDir != "" {
		stateParent = o.stateDir
	}
	res := make([]benchkit.Latency, len(legs))
	busy := make([]float64, len(legs))
	for i, l := range legs {
		fmt.Fprintf(os.Stderr, "bench: daemon with the %s broker, %d messages...\n", l.name, o.n)
		state, err := os.MkdirTemp(stateParent, "state-"+l.name+"-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(state)
		res[i], busy[i], err = benchDaemon(o.options, exe, state, l.args, l.sub)
		if err != nil {
			return fmt.Errorf("%s: %w", l.name, err)
		}
	}
	emb, ext := res[0], res[1]
	fmt.Printf("\nLatency through the daemon, %d texts %v apart: from the simulated radio's write of the frame (in this\n", o.n, o.interval)
	fmt.Println("process, the daemon on --device tcp://) to the JSON line printed by mosquitto_sub, subscribed to the broker the daemon")
	fmt.Println("publishes to. Both runs include the daemon's spool (a heard packet is recorded before it is published); with")
	fmt.Println("--mqtt-broker the decoded packet for the other gateways is also written to the outbox before the JSON is published.")
	fmt.Printf("The daemons' state directories are in %s (%s). \"machine busy\": all cores during the series, the\n", stateParent, fsType(stateParent))
	fmt.Println("processes measured included (/proc/stat); a run well above the others had company on the machine.")
	fmt.Println()
	fmt.Println("| broker | daemon flags | p50 | p99 | max | received | machine busy |")
	fmt.Println("|---|---|---:|---:|---:|---:|---:|")
	fmt.Printf("| embedded (mochi-mqtt, in the daemon) | `--mqtt-listen 127.0.0.1:PORT` | %s | %s | %s | %d/%d | %.0f%% |\n", benchkit.Ms(emb.P50), benchkit.Ms(emb.P99), benchkit.Ms(emb.Max), emb.Got, o.n, 100*busy[0])
	fmt.Printf("| external mosquitto | `--mqtt-broker mqtt://127.0.0.1:PORT` | %s | %s | %s | %d/%d | %.0f%% |\n", benchkit.Ms(ext.P50), benchkit.Ms(ext.P99), benchkit.Ms(ext.Max), ext.Got, o.n, 100*busy[1])
	fmt.Printf("| ratio mosquitto / embedded | | %.2f | %.2f | %.2f | | |\n", benchkit.Ratio(ext.P50, emb.P50), benchkit.Ratio(ext.P99, emb.P99), benchkit.Ratio(ext.Max, emb.Max))
	if emb.Got < o.n || ext.Got < o.n {
		return fmt.Errorf("messages lost: embedded %d/%d, mosquitto %d/%d", emb.Got, o.n, ext.Got, o.n)
	}
	return nil
}

// benchDaemon starts the daemon (exe) on a simulated radio served by this
// process, with brokerArgs, and times o.n texts from the radio to their
// JSON lines from mosquitto_sub on subAddr. It also returns how busy the
// machine was meanwhile.
func benchDaemon(o options, exe, stateDir string, brokerArgs []string, subAddr string) (benchkit.Latency, float64, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	simCfg := meshsim.Demo()
	simCfg.TrafficInterval = 0 // only our probes
	radio := meshsim.New(simCfg)
	addr, serve, err := radio.ListenTCP(ctx, "127.0.0.1:0")
	if err != nil {
		return benchkit.Latency{}, 0, err
	}
	serveDone := make(chan struct{})
	go func() { defer close(serveDone); _ = serve() }()
	defer func() { cancel(); <-serveDone }()

	args := append([]string{"--device", "tcp://" + addr.String(), "--state-dir", stateDir}, brokerArgs...)
	d, err := benchkit.StartProc(exe, args, nil)
	if err != nil {
		return benchkit.Latency{}, 0, err
	}
	// Stopped before the radio: the daemon then leaves without waiting
	// for a reconnect.
	defer d.Stop(o.timeout)
	if err := benchkit.WaitUntil(o.timeout, radio.Changed, func() bool { return radio.Ready() || d.Exited() }); err != nil || d.Exited() {
		return benchkit.Latency{}, 0, fmt.Errorf("daemon did not finish the radio handshake: %v; output: %s", err, d.Output())
	}

	root := topics.Root("", simCfg.Region.String())
	jsonTopic := topics.JSON(root, mesh.PresetName(simCfg.Preset), mesh.NodeID(simCfg.NodeNum))
	host, port, _ := net.SplitHostPort(subAddr)
	// The radio side's retained status arrives once the subscription is in place.
	status := topics.Status(mesh.NodeID(simCfg.NodeNum))
	sub, err := startSub(o, host, port, status, jsonTopic, status)
	if err != nil {
		return benchkit.Latency{}, 0, err
	}
	defer sub.stop(o.timeout)
	if err := sub.waitReady(o.timeout); err != nil {
		return benchkit.Latency{}, 0, fmt.Errorf("%w; daemon output: %s", err, d.Output())
	}
	meter := benchkit.NewCPUMeter()
	if err := meter.Start(); err != nil {
		return benchkit.Latency{}, 0, err
	}
	sent, err := injectTexts(o, radio, simCfg.Peers)
	if err != nil {
		return benchkit.Latency{}, 0, err
	}
	recv, _ := sub.wait(o.n, o.timeout)
	if err := meter.Stop(); err != nil {
		return benchkit.Latency{}, 0, err
	}
	return benchkit.Summarize(sent, recv), meter.MachineBusyShare, nil
}

// --- throughput ---

// serveEmbeddedCmd is the hidden subcommand that runs the embedded broker
// alone, as a network server in a process of its own.
const serveEmbeddedCmd = "serve-embedded-broker"

// serveEmbeddedMain runs broker.NewEmbedded as the daemon configures it,
// with a credentials file, prints "listening ADDR" and serves until
// SIGTERM or SIGINT.
func serveEmbeddedMain(args []string) int {
	fs := flag.NewFlagSet(serveEmbeddedCmd, flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "TCP address")
	creds := fs.String("credentials", "", "credentials file")
	_ = fs.Parse(args)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	b, err := broker.NewEmbedded(broker.Config{
		Listen: *listen, CredentialsFile: *creds, IsDownlink: topics.IsJSONDownlink, IsOwn: topics.IsBridgeTopic,
	}, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := b.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	fmt.Println("listening", b.Addr())
	<-sig
	_ = b.Close()
	return 0
}

// startEmbedded starts this program's serve-embedded-broker subcommand with
// a credentials file whose one user may read and write every topic, and
// returns the process, its address and the user's password.
func startEmbedded(tmp string, timeout time.Duration) (*benchkit.Proc, string, string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", "", err
	}
	var r [12]byte
	_, _ = rand.Read(r[:])
	pass := hex.EncodeToString(r[:])
	creds := filepath.Join(tmp, "embedded-credentials.yaml")
	if err := os.WriteFile(creds, fmt.Appendf(nil, "users:\n  %s:\n    password: %s\n    read: ['#']\n    write: ['#']\n", loadUser, pass), 0o600); err != nil {
		return nil, "", "", err
	}
	addrCh := make(chan string, 1)
	p, err := benchkit.StartCmd(exec.Command(self, serveEmbeddedCmd, "-listen", "127.0.0.1:0", "-credentials", creds), func(_ time.Time, line string) {
		if a, ok := strings.CutPrefix(line, "listening "); ok {
			select {
			case addrCh <- a:
			default:
			}
		}
	})
	if err != nil {
		return nil, "", "", err
	}
	select {
	case a := <-addrCh:
		return p, a, pass, nil
	case <-p.Done():
		return nil, "", "", fmt.Errorf("embedded broker exited: %s", p.Output())
	case <-time.After(timeout):
		p.Stop(timeout)
		return nil, "", "", fmt.Errorf("embedded broker did not start within %v: %s", timeout, p.Output())
	}
}

const loadUser = "bench"

// brokerLoad measures both brokers, each a process of its own on loopback,
// under the same paho load, case by case, alternating which goes first.
func brokerLoad(o brokersOptions, tmp string) error {
	emb, embAddr, pass, err := startEmbedded(tmp, o.timeout)
	if err != nil {
		return err
	}
	defer emb.Stop(o.timeout)
	mq, mqAddr, err := startMosquitto(filepath.Join(tmp, "mosquitto-load.conf"), o.timeout)
	if err != nil {
		return err
	}
	defer mq.Stop(o.timeout)
	targets := []loadTarget{
		{name: "embedded", addr: embAddr, user: loadUser, pass: pass, pid: emb.Cmd.Process.Pid},
		{name: "mosquitto", addr: mqAddr, pid: mq.Cmd.Process.Pid},
	}

	type row struct {
		c   loadCase
		res [2][]loadResult // embedded, mosquitto; one per repeat
	}
	var rows []row
	k := 0
	for _, subs := range o.loadSubs {
		for _, qos := range o.loadQoS {
			r := row{c: loadCase{subs: subs, qos: byte(qos)}}
			for range o.loadRepeat {
				// Alternating the order spreads drift (other tenants of the
				// machine, the kernel's caches) over both brokers.
				order := []int{0, 1}
				if k%2 == 1 {
					order = []int{1, 0}
				}
				k++
				for _, t := range order {
					fmt.Fprintf(os.Stderr, "bench: %s, %d subscriber(s), QoS %d, %d messages...\n", targets[t].name, subs, qos, o.loadN)
					res, err := runLoad(targets[t], r.c, o)
					if err != nil {
						return fmt.Errorf("%s, %d subscriber(s), QoS %d: %w", targets[t].name, subs, qos, err)
					}
					r.res[t] = append(r.res[t], res)
				}
			}
			rows = append(rows, r)
		}
	}

	fmt.Printf("\nThroughput, one paho publisher and N paho subscribers on one topic, all in this process, over loopback TCP;\n")
	fmt.Printf("%d messages of %d bytes per measurement (after a warm-up of %d), at most %d published and not yet received\n", o.loadN, o.loadSize, warmUpN(o.loadN), o.loadWindow)
	fmt.Println("by every subscriber. The embedded broker is broker.NewEmbedded as the daemon configures it (access rules, one")
	fmt.Println("user allowed to read and write every topic), alone in a process of its own (this program's serve-embedded-broker")
	fmt.Println("subcommand), so both brokers are network servers in their own processes under the same client load.")
	fmt.Println("mosquitto runs with its own defaults, anonymous, without persistence.")
	fmt.Printf("msgs/s: messages received by every subscriber per second, from the first publish to the last delivery; median of\n")
	fmt.Printf("%d measurements (lowest–highest); deliveries/s counts each subscriber's copy (median).\n", o.loadRepeat)
	fmt.Println()
	fmt.Println("| subscribers | QoS | embedded msgs/s | mosquitto msgs/s | ratio embedded / mosquitto | embedded deliveries/s | mosquitto deliveries/s |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		e, m := medianRate(r.res[0]), medianRate(r.res[1])
		fmt.Printf("| %d | %d | %s | %s | %.2f | %s | %s |\n", r.c.subs, r.c.qos, rateRange(r.res[0]), rateRange(r.res[1]),
			e/m, thousands(e*float64(r.c.subs)), thousands(m*float64(r.c.subs)))
	}
	for _, r := range rows {
		for t, rs := range r.res {
			var dups int64
			for _, res := range rs {
				dups += res.dups
			}
			if dups > 0 {
				fmt.Printf("\n%s, %d subscriber(s), QoS %d: %d copies received twice (not counted).\n", targets[t].name, r.c.subs, r.c.qos, dups)
			}
		}
	}
	fmt.Printf("\nCPU over all %d measurements of each (/proc/PID/stat utime+stime; 100%% is one of the %d cores): the broker's\n", o.loadRepeat, runtime.NumCPU())
	fmt.Println("process; \"clients\", this process (the publisher and every subscriber); \"machine\", how busy all cores were")
	fmt.Println("(/proc/stat, 100% = all busy); \"rest\", the busy time neither process accounts for (the kernel's loopback work")
	fmt.Println("done outside them, other processes), in % of one core. µs per delivery is CPU time divided by the deliveries")
	fmt.Println("counted (10 ms ticks).")
	fmt.Println()
	fmt.Println("| subscribers | QoS | broker | broker CPU | broker µs per delivery | clients CPU | clients µs per delivery | machine busy | rest |")
	fmt.Println("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		for t, rs := range r.res {
			var elapsed, bcpu, ccpu time.Duration
			var busy float64
			deliveries := 0
			for _, res := range rs {
				elapsed += res.elapsed
				bcpu += res.brokerCPU
				ccpu += res.clientCPU
				busy += res.machineBusy * res.elapsed.Seconds()
				deliveries += res.msgs * res.nsubs
			}
			us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / float64(deliveries) }
			share := func(d time.Duration) float64 { return 100 * d.Seconds() / elapsed.Seconds() }
			machine := 100 * busy / elapsed.Seconds()
			rest := machine*float64(runtime.NumCPU()) - share(bcpu) - share(ccpu)
			fmt.Printf("| %d | %d | %s | %.0f%% | %.1f | %.0f%% | %.1f | %.0f%% | %.0f%% |\n", r.c.subs, r.c.qos, targets[t].name,
				share(bcpu), us(bcpu), share(ccpu), us(ccpu), machine, max(rest, 0))
		}
	}
	return nil
}

// medianRate is the median msgs/s of rs (the lower middle for an even count).
func medianRate(rs []loadResult) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = r.msgRate()
	}
	slices.Sort(v)
	return v[(len(v)-1)/2]
}

// rateRange is "median (lowest–highest)", or the one rate.
func rateRange(rs []loadResult) string {
	med := medianRate(rs)
	if len(rs) == 1 {
		return thousands(med)
	}
	lo, hi := rs[0].msgRate(), rs[0].msgRate()
	for _, r := range rs {
		lo, hi = min(lo, r.msgRate()), max(hi, r.msgRate())
	}
	return fmt.Sprintf("%s (%s–%s)", thousands(med), thousands(lo), thousands(hi))
}

// thousands formats a rate as a whole number with thousands separators.
func thousands(v float64) string {
	s := strconv.FormatInt(int64(v+0.5), 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// fsType names the file system dir is on, as far as fsync cost goes.
func fsType(dir string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return "?"
	}
	switch st.Type {
	case 0xef53:
		return "ext4"
	case 0x01021994:
		return "tmpfs: no fsync cost"
	case 0x58465342:
		return "xfs"
	case 0x9123683e:
		return "btrfs"
	}
	return fmt.Sprintf("file system 0x%x", st.Type)
}
