//go:build integration

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jshiffer/lora-xmpp-bridge/internal/meshsim"
	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
	"github.com/jshiffer/lora-xmpp-bridge/internal/xmpptest"
)

// Tests of the daemon binary with real mosquitto clients and a real Prosody.

// The README's first command: the demo with the simulated radio, watched by
// a real mosquitto_sub. It also stops cleanly on SIGTERM.
func TestDemo(t *testing.T) {
	testutil.NeedCommand(t, "mosquitto_sub")
	state := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "bridge.toml")
	// The config file path is exercised too; the flag on the command line wins.
	os.WriteFile(cfg, []byte("mqtt-listen = \"127.0.0.1:1\"\nlog-level = \"debug\"\n"), 0o600)
	cmd := exec.Command(binary, "--device", "sim", "--config", cfg, "--mqtt-listen", "127.0.0.1:0", "--state-dir", state)
	var logs safeBuffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	addr := loggedAddr(t, &logs, listenRE)
	host, port, _ := net.SplitHostPort(addr)
	sub := testutil.Start(t, "mosquitto_sub", "-h", host, "-p", port, "-t", "msh/#", "-t", "sovereign/bridge/radio/+", "-v")
	radio := sub.WaitFor(t, 30*time.Second, testutil.Contains("sovereign/bridge/radio/!5eed0001 "))
	var info map[string]any
	json.Unmarshal([]byte(strings.TrimPrefix(radio, "sovereign/bridge/radio/!5eed0001 ")), &info)
	if info["id"] != "!5eed0001" || info["region"] != "EU_868" || info["mqtt_root"] != "msh/EU_868" {
		t.Errorf("radio record = %v", info)
	}
	// The simulated nodes talk every few seconds.
	sub.WaitFor(t, 90*time.Second, testutil.Contains("msh/EU_868/2/json/LongFast/!5eed0001 {"))
	if !strings.Contains(logs.String(), "level=DEBUG") {
		t.Error("log-level from the config file was not applied")
	}

	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit after SIGINT: %v\n%s", err, &logs)
		}
	case <-ctx.Done():
		t.Fatalf("did not stop after SIGINT\n%s", &logs)
	}
	if _, err := os.Stat(filepath.Join(state, "sim", "nodes.json")); err != nil {
		t.Errorf("node database not saved on shutdown: %v", err)
	}
}

// The whole daemon with XMPP, as the NixOS module runs it: password from a
// file, the server's CA from SSL_CERT_FILE, the simulated radio. A wrong
// password ends it with EX_NOPERM and a clear line; the right one bridges.
func TestXMPP(t *testing.T) {
	srv := xmpptest.StartProsody(t, xmpptest.WithAccount("bridge", "bridge-pw"), xmpptest.WithAccount("alice", "alice-pw"))
	room := "village@" + srv.MUCDomain
	dir := t.TempDir()
	run := func(password string) (*exec.Cmd, *safeBuffer) {
		pwFile := filepath.Join(dir, "xmpp-password")
		os.WriteFile(pwFile, []byte(password+"\n"), 0o600)
		cmd := exec.Command(binary, "--device", "sim", "--mqtt-listen", "127.0.0.1:0", "--state-dir", filepath.Join(dir, "state"),
			"-j", "bridge@"+srv.Domain, "--password-file", pwFile, "-r", room, "-n", "meshbridge", "--xmpp-server", srv.Addr)
		cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+srv.CAFile)
		logs := &safeBuffer{}
		cmd.Stderr = logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, logs
	}

	cmd, logs := run("not-the-password")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 77 {
			t.Errorf("wrong password: %v, want exit status 77\n%s", err, logs)
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("wrong password did not end the daemon\n%s", logs)
	}
	if !strings.Contains(logs.String(), "XMPP login refused") || strings.Contains(logs.String(), "not-the-password") {
		t.Errorf("logs:\n%s", logs)
	}

	ctx := context.Background()
	alice := xmpptest.Dial(t, srv, "alice", "alice-pw")
	if err := alice.Join(ctx, room, "alice"); err != nil {
		t.Fatal(err)
	}
	cmd, logs = run("bridge-pw")
	defer func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() }()
	// The simulated nodes talk every few seconds; about half of it is text.
	alice.WaitMessage(t, 120*time.Second, func(m xmpptest.Message) bool { return m.Nick == "meshbridge" })
	if strings.Contains(logs.String(), "bridge-pw") {
		t.Error("the password appears in the logs")
	}
}

// Under systemd: READY once running, WATCHDOG while the loops make
// progress, STOPPING on the way out; /healthz and /metrics on request.
func TestSystemdAndMetrics(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var mu sync.Mutex
	var notes []string
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			mu.Lock()
			notes = append(notes, string(buf[:n]))
			mu.Unlock()
		}
	}()
	noted := func(s string) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			for _, n := range notes {
				if strings.Contains(n, s) {
					return true
				}
			}
			return false
		}
	}

	cmd := exec.Command(binary, "--device", "sim", "--mqtt-listen", "off", "--metrics-listen", "127.0.0.1:0", "--state-dir", t.TempDir())
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=500000")
	logs := &safeBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	testutil.Eventually(t, 20*time.Second, noted("READY=1"), "no READY=1")
	testutil.Eventually(t, 20*time.Second, noted("WATCHDOG=1"), "no WATCHDOG=1")

	addr := loggedAddr(t, logs, metricsRE)
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	testutil.Eventually(t, 20*time.Second, func() bool {
		code, body := get("/healthz")
		return code == 200 && strings.Contains(body, `"radio":"up"`) && strings.Contains(body, `"xmpp":"off"`)
	}, "healthz never reported the radio up")
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "sovereign_bridge_handshakes_total 1") ||
		!strings.Contains(body, `sovereign_bridge_up{side="radio"} 1`) || !strings.Contains(body, `sovereign_bridge_spool_depth{queue="radio"} 0`) ||
		!strings.Contains(body, "sovereign_bridge_airtime_budget_seconds 180") {
		t.Errorf("metrics: %d\n%s", code, body)
	}
	cmd.Process.Signal(os.Interrupt)
	cmd.Wait()
	testutil.Eventually(t, 10*time.Second, noted("STOPPING=1"), "no STOPPING=1")
}

// Fault injection: the bridge SIGKILLed at random points, ten times, while
// the mesh and the room both talk. Every room message reaches the radio
// exactly once (caught up from the room's archive when said while the
// bridge was dead); no mesh text shows twice in the room, and every one the
// bridge had time to take in (heard at least 300 ms before the kill) shows
// once.
func TestSIGKILL(t *testing.T) {
	srv, room, alice := roomWithAlice(t)
	ctx := context.Background()
	radio, addr := startQuietRadio(t)
	dir := t.TempDir()
	pw := bridgePasswordFile(t, dir)
	start := func() (*exec.Cmd, *safeBuffer) {
		cmd := exec.Command(binary, "--device", "tcp://"+addr, "--mqtt-listen", "off", "--state-dir", filepath.Join(dir, "state"),
			"--text-interval", "100ms", "-j", "bridge@"+srv.Domain, "--password-file", pw, "-r", room, "-n", "meshbridge", "--xmpp-server", srv.Addr)
		cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+srv.CAFile)
		logs := &safeBuffer{}
		cmd.Stderr = logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, logs
	}

	rng := rand.New(rand.NewPCG(1, 2))
	var said []string
	mustArrive := map[string]bool{}
	injected := map[string]bool{}
	for k := 0; k < 10; k++ {
		hs := radio.Handshakes()
		cmd, logs := start()
		testutil.Eventually(t, 30*time.Second, func() bool { return radio.Handshakes() > hs && radio.Ready() }, "bridge %d never reached the radio\n%s", k, logs)
		for j := 0; j < 3; j++ {
			text := fmt.Sprintf("mesh %d-%d", k, j)
			if radio.Inject(radio.TextPacket(0xa1b2c3d4, text)) {
				injected[text] = true
				mustArrive[text] = false // decided at the kill
			}
			line := fmt.Sprintf("room %d-%d", k, j)
			if _, err := alice.Say(ctx, room, line); err != nil {
				t.Fatal(err)
			}
			said = append(said, line)
		}
		heardAt := time.Now()
		// The fault: a kill at a random point of what follows.
		time.Sleep(time.Duration(rng.IntN(800)) * time.Millisecond)
		settled := time.Since(heardAt) >= 300*time.Millisecond
		for text := range mustArrive {
			if strings.HasPrefix(text, fmt.Sprintf("mesh %d-", k)) {
				mustArrive[text] = settled
			}
		}
		cmd.Process.Kill()
		cmd.Wait()
	}

	cmd, logs := start()
	defer func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() }()
	countOnRadio := func(s string) int {
		n := 0
		for _, p := range radio.Received() {
			if string(p.GetDecoded().GetPayload()) == "alice: "+s {
				n++
			}
		}
		return n
	}
	missing := func() []string {
		var out []string
		for _, s := range said {
			if countOnRadio(s) == 0 {
				out = append(out, s)
			}
		}
		return out
	}
	if !testutil.Poll(context.Background(), 90*time.Second, func() bool { return len(missing()) == 0 }) {
		t.Fatalf("room messages that never reached the radio: %q\n%s", missing(), logs)
	}
	for _, s := range said {
		if n := countOnRadio(s); n != 1 {
			t.Errorf("%q reached the radio %d times", s, n)
		}
	}
	for text, must := range mustArrive {
		if must {
			alice.WaitMessage(t, 30*time.Second, func(m xmpptest.Message) bool { return strings.HasSuffix(m.Body, text) })
		}
	}
	inRoom := map[string]int{}
	for _, m := range alice.Messages() {
		if _, text, ok := strings.Cut(m.Body, ": "); ok && injected[text] {
			inRoom[text]++
		}
	}
	for text, n := range inRoom {
		if n != 1 {
			t.Errorf("%q shown %d times in the room", text, n)
		}
	}
	t.Logf("%d room messages each reached the radio once; %d of %d mesh texts reached the room once (%d had to)",
		len(said), len(inRoom), len(injected), countTrue(mustArrive))
}

func countTrue(m map[string]bool) int {
	n := 0
	for _, v := range m {
		if v {
			n++
		}
	}
	return n
}

var metricsRE = regexp.MustCompile(`metrics and health listening.*addr=(\S+)`)

// With an external broker that is down when the daemon starts, the daemon
// starts anyway, and what the radio side publishes meanwhile (its radio
// record, retained, with the mesh it is on) reaches the broker once it is
// up, through the outbox.
func TestExternalBrokerDownAtStart(t *testing.T) {
	m := testutil.StartMosquitto(t)
	m.Stop()
	state := t.TempDir()
	cmd := exec.Command(binary, "--device", "sim", "--mqtt-broker", m.URL, "--state-dir", state, "--log-level", "debug", "--mesh", "valley")
	logs := &safeBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	loggedAddr(t, logs, regexp.MustCompile(`simulated radio listening.*addr=(\S+)`))
	testutil.Eventually(t, 30*time.Second, func() bool {
		return strings.Contains(logs.String(), `msg="radio ready"`)
	},
		"the radio link never came up while the broker was down\n%s", logs)
	m.Start()
	host, port, _ := net.SplitHostPort(m.Addr)
	sub := testutil.Start(t, "mosquitto_sub", "-h", host, "-p", port, "-t", "sovereign/bridge/radio/!5eed0001", "-v")
	record := sub.WaitFor(t, 60*time.Second, testutil.Contains(`sovereign/bridge/radio/!5eed0001 {`))
	if !strings.Contains(record, `"mesh":"valley"`) {
		t.Errorf("radio record without its mesh: %s", record)
	}
	id, err := os.ReadFile(filepath.Join(state, "sim", "mqtt-client-id"))
	if err != nil || !strings.HasPrefix(string(id), "sovereign-bridge-") {
		t.Errorf("client id not kept in the state directory: %q, %v", id, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit: %v\n%s", err, logs)
	}
}

// The two sides in two daemons meeting on an external mosquitto: a radio
// side (no XMPP) and an XMPP side (--device none). Mesh texts reach the
// room and room messages reach the radio, each once and in order, although
// in the middle of them the XMPP side is SIGKILLed, then mosquitto is
// SIGKILLed and restarted, then the XMPP side comes back.
func TestSplitRolesOverMosquitto(t *testing.T) {
	srv, room, alice := roomWithAlice(t)
	m := testutil.StartMosquitto(t)
	ctx := context.Background()
	radio, addr := startQuietRadio(t)
	dir := t.TempDir()
	pw := bridgePasswordFile(t, dir)
	start := func(name string, args ...string) (*exec.Cmd, *safeBuffer) {
		cmd := exec.Command(binary, append([]string{"--mqtt-broker", m.URL, "--state-dir", filepath.Join(dir, name), "--text-interval", "100ms"}, args...)...)
		cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+srv.CAFile)
		logs := &safeBuffer{}
		cmd.Stderr = logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() })
		return cmd, logs
	}
	xmppArgs := []string{"--device", "none", "-j", "bridge@" + srv.Domain, "--password-file", pw, "-r", room, "-n", "meshbridge", "--xmpp-server", srv.Addr}
	xmppSide, xmppLogs := start("xmpp-side", xmppArgs...)
	alice.WaitPresence(t, 60*time.Second, func(p xmpptest.Presence) bool { return p.Nick == "meshbridge" })
	_, radioLogs := start("radio-side", "--device", "tcp://"+addr)
	testutil.Eventually(t, 30*time.Second, radio.Ready, "the radio side never reached the radio\n%s", radioLogs)

	const texts, lines = 100, 20
	for i := range texts {
		switch i {
		case texts / 3:
			// The XMPP side dies; its session on the broker keeps what
			// the radio side publishes meanwhile.
			xmppSide.Process.Kill()
			xmppSide.Wait()
		case texts / 2:
			m.Kill()
			m.Start()
		case 2 * texts / 3:
			xmppSide, xmppLogs = start("xmpp-side", xmppArgs...)
		}
		text := fmt.Sprintf("mesh text %02d", i)
		testutil.Eventually(t, 10*time.Second, func() bool { return radio.Inject(radio.TextPacket(0xa1b2c3d4, text)) }, "radio took no packet")
		if i%(texts/lines) == 0 {
			if _, err := alice.Say(ctx, room, fmt.Sprintf("room line %02d", i/(texts/lines))); err != nil {
				t.Fatal(err)
			}
		}
	}

	inRoom := func() []string {
		var got []string
		for _, msg := range alice.Messages() {
			if msg.Nick == "meshbridge" && strings.Contains(msg.Body, "mesh text ") {
				got = append(got, msg.Body[strings.Index(msg.Body, "mesh text "):])
			}
		}
		return got
	}
	onAir := func() []string {
		var got []string
		for _, p := range radio.Received() {
			if b := string(p.GetDecoded().GetPayload()); strings.Contains(b, "room line ") {
				got = append(got, b[strings.Index(b, "room line "):])
			}
		}
		return got
	}
	if !testutil.Poll(ctx, 120*time.Second, func() bool { return len(distinct(inRoom())) == texts && len(distinct(onAir())) == lines }) {
		t.Fatalf("not everything arrived: room has %q\nair has %q\nxmpp side:\n%s\nradio side:\n%s", inRoom(), onAir(), xmppLogs, radioLogs)
	}
	room1, air := inRoom(), onAir()
	t.Logf("mesh -> room: %d of %d in the room (%d copies); room -> mesh: %d of %d on air (%d copies)", len(distinct(room1)), texts, len(room1), len(distinct(air)), lines, len(air))
	for name, got := range map[string][]string{"room": room1, "air": air} {
		if d := distinct(got); len(d) != len(got) {
			t.Errorf("%s: %d duplicates", name, len(got)-len(d))
		}
		if !slices.IsSorted(got) {
			t.Errorf("%s: out of order: %q", name, got)
		}
	}
}

func distinct(xs []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range xs {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// startQuietRadio serves a simulated radio whose nodes say only what the
// test injects, with a short text rule, on a loopback TCP port.
func startQuietRadio(t *testing.T) (*meshsim.Radio, string) {
	t.Helper()
	return startRadioNum(t, meshsim.Demo().NodeNum)
}

// roomWithAlice starts a Prosody with the accounts bridge and alice, and
// has alice join the room the bridge will bridge.
func roomWithAlice(t *testing.T) (*xmpptest.Server, string, *xmpptest.Client) {
	t.Helper()
	srv := xmpptest.StartProsody(t, xmpptest.WithAccount("bridge", "bridge-pw"), xmpptest.WithAccount("alice", "alice-pw"))
	room := "village@" + srv.MUCDomain
	alice := xmpptest.Dial(t, srv, "alice", "alice-pw")
	if err := alice.Join(context.Background(), room, "alice"); err != nil {
		t.Fatal(err)
	}
	return srv, room, alice
}

// bridgePasswordFile writes the bridge account's password file into dir.
func bridgePasswordFile(t *testing.T, dir string) string {
	t.Helper()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("bridge-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return pw
}
