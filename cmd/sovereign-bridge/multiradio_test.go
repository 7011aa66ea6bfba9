//go:build integration

package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jshiffer/lora-xmpp-bridge/internal/meshsim"
	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
	"github.com/jshiffer/lora-xmpp-bridge/internal/xmpptest"
)

// startRadioNum is startQuietRadio for a radio whose own node is num.
func startRadioNum(t *testing.T, num uint32) (*meshsim.Radio, string) {
	t.Helper()
	simCfg := meshsim.Demo()
	simCfg.NodeNum, simCfg.TrafficInterval, simCfg.TextRule = num, 0, 50*time.Millisecond
	radio := meshsim.New(simCfg)
	ctx, stop := context.WithCancel(context.Background())
	addr, serve, err := radio.ListenTCP(ctx, "127.0.0.1:0")
	if err != nil {
		stop()
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = serve() }()
	t.Cleanup(func() { stop(); <-served })
	return radio, addr.String()
}

// daemons starts daemons on one external mosquitto, each in its own state
// directory, stopped (SIGINT) at the end of the test.
type daemons struct {
	t      *testing.T
	broker string
	dir    string
	env    []string
}

func (d *daemons) start(name string, args ...string) (*exec.Cmd, *safeBuffer) {
	d.t.Helper()
	cmd := exec.Command(binary, append([]string{"--mqtt-broker", d.broker, "--state-dir", filepath.Join(d.dir, name), "--text-interval", "100ms"}, args...)...)
	cmd.Env = append(os.Environ(), d.env...)
	logs := &safeBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() })
	return cmd, logs
}

// texts returns the texts a radio was asked to send that contain s.
func texts(r *meshsim.Radio, s string) []string {
	var out []string
	for _, p := range r.Received() {
		if b := string(p.GetDecoded().GetPayload()); strings.Contains(b, s) {
			out = append(out, b)
		}
	}
	return out
}

// askStatus says !status until the bridge's answer satisfies ok.
func askStatus(t *testing.T, alice *xmpptest.Client, room string, ok func(string) bool, what string) {
	t.Helper()
	askStatusOf(t, alice, room, "meshbridge", ok, what)
}

// askStatusOf is askStatus for the bridge with nick.
func askStatusOf(t *testing.T, alice *xmpptest.Client, room, nick string, ok func(string) bool, what string) {
	t.Helper()
	ctx := context.Background()
	if !testutil.Poll(ctx, 60*time.Second, func() bool {
		said := time.Now()
		if _, err := alice.Say(ctx, room, "!status"); err != nil {
			return false
		}
		reply := ""
		testutil.Poll(ctx, 5*time.Second, func() bool {
			for _, m := range alice.Messages() {
				if m.Nick == nick && m.Received.After(said) && strings.Contains(m.Body, "Bridging channel") {
					reply = m.Body
				}
			}
			return reply != ""
		})
		return ok(reply)
	}) {
		t.Fatalf("the bridge never said %s", what)
	}
}

// radioSides is one XMPP side and two radio sides (radios !5eed000a and
// !5eed000b) on one mosquitto, with alice in the room.
type radioSides struct {
	alice                  *xmpptest.Client
	room                   string
	radioA, radioB         *meshsim.Radio
	addrA                  string
	d                      *daemons
	sideA                  *exec.Cmd
	logsA, logsB, xmppLogs *safeBuffer
}

// startRadioSides starts them, the radio sides with radioArgs, and waits
// until the XMPP side says both radios are connected.
func startRadioSides(t *testing.T, radioArgs ...string) *radioSides {
	t.Helper()
	srv, room, alice := roomWithAlice(t)
	m := testutil.StartMosquitto(t)
	rs := &radioSides{alice: alice, room: room,
		d: &daemons{t: t, broker: m.URL, dir: t.TempDir(), env: []string{"SSL_CERT_FILE=" + srv.CAFile}}}
	var addrB string
	rs.radioA, rs.addrA = startRadioNum(t, 0x5eed000a)
	rs.radioB, addrB = startRadioNum(t, 0x5eed000b)
	pw := bridgePasswordFile(t, rs.d.dir)
	_, rs.xmppLogs = rs.d.start("xmpp-side", "--device", "none", "-j", "bridge@"+srv.Domain, "--password-file", pw, "-r", room, "-n", "meshbridge", "--xmpp-server", srv.Addr)
	alice.WaitPresence(t, 60*time.Second, func(p xmpptest.Presence) bool { return p.Nick == "meshbridge" })
	rs.sideA, rs.logsA = rs.d.start("radio-a", append([]string{"--device", "tcp://" + rs.addrA}, radioArgs...)...)
	_, rs.logsB = rs.d.start("radio-b", append([]string{"--device", "tcp://" + addrB}, radioArgs...)...)
	testutil.Eventually(t, 30*time.Second, func() bool { return rs.radioA.Ready() && rs.radioB.Ready() },
		"the radio sides never reached their radios\n%s\n%s", rs.logsA, rs.logsB)
	askStatus(t, alice, room, func(s string) bool {
		s = strings.ToLower(s)
		return strings.Contains(s, "radio !5eed000a is connected") && strings.Contains(s, "radio !5eed000b is connected")
	}, "both radios are connected")
	return rs
}

// count is a number a test expects of what arrived.
type count struct {
	what      string
	got, want int
}

func checkCounts(t *testing.T, counts []count) {
	t.Helper()
	for _, c := range counts {
		if c.got != c.want {
			t.Errorf("%s: %d, want %d", c.what, c.got, c.want)
		}
	}
}

// Two radio sides on one mesh (named alike with --mesh) and one XMPP side
// on one mosquitto: a text both radios hear is posted once; what the room
// says goes out once, on the radio with the lower node number, and on the
// other once that one's radio side is killed.
func TestTwoRadiosOneMesh(t *testing.T) {
	sides := startRadioSides(t, "--mesh", "valley")
	alice, room, radioA, radioB, d := sides.alice, sides.room, sides.radioA, sides.radioB, sides.d
	sideA, logsB, xmppLogs := sides.sideA, sides.logsB, sides.xmppLogs
	ctx := context.Background()

	// Heard by both radios: the same packet, posted once.
	p := radioA.TextPacket(0xa1b2c3d4, "heard by both")
	testutil.Eventually(t, 10*time.Second, func() bool { return radioA.Inject(p) }, "radio A took no packet")
	testutil.Eventually(t, 10*time.Second, func() bool { return radioB.Inject(p) }, "radio B took no packet")
	alice.WaitMessage(t, 30*time.Second, func(m xmpptest.Message) bool { return strings.HasSuffix(m.Body, "heard by both") })

	// Said in the room: on air once, from the lower-numbered radio.
	if _, err := alice.Say(ctx, room, "first line"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() bool { return len(texts(radioA, "first line")) == 1 }, "the room's line never reached radio A\n%s", xmppLogs)

	// Radio side A is restarted (from now on it knows its gateway id and
	// leaves the broker a will), then killed: the broker says it is gone,
	// and B takes over.
	sideA.Process.Signal(os.Interrupt)
	sideA.Wait()
	hs := radioA.Handshakes()
	sideA, logsA := d.start("radio-a", "--device", "tcp://"+sides.addrA, "--mesh", "valley")
	testutil.Eventually(t, 30*time.Second, func() bool { return radioA.Handshakes() > hs && radioA.Ready() }, "radio side A never came back\n%s", logsA)
	askStatus(t, alice, room, func(s string) bool {
		s = strings.ToLower(s)
		return strings.Contains(s, "radio !5eed000a is connected") && strings.Contains(s, "radio !5eed000b is connected")
	}, "radio A is back")
	sideA.Process.Kill()
	sideA.Wait()
	askStatus(t, alice, room, func(s string) bool {
		s = strings.ToLower(s)
		return strings.Contains(s, "radio !5eed000a is disconnected") && strings.Contains(s, "radio !5eed000b is connected")
	}, "radio A is gone")
	if _, err := alice.Say(ctx, room, "second line"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() bool { return len(texts(radioB, "second line")) == 1 }, "after A stopped, the room's line never reached radio B\n%s\n%s", xmppLogs, logsB)

	// A marker through the whole path: what was counted has settled.
	testutil.Eventually(t, 10*time.Second, func() bool { return radioB.Inject(radioB.TextPacket(0xa1b2c3d4, "marker")) }, "radio B took no packet")
	alice.WaitMessage(t, 30*time.Second, func(m xmpptest.Message) bool { return strings.HasSuffix(m.Body, "marker") })
	checkCounts(t, []count{
		{"posts of the text both radios heard", bridgePosts(alice, "heard by both"), 1},
		{"first line on radio A", len(texts(radioA, "first line")), 1},
		{"first line on radio B", len(texts(radioB, "first line")), 0},
		{"second line on radio A", len(texts(radioA, "second line")), 0},
		{"second line on radio B", len(texts(radioB, "second line")), 1},
	})
}

// Two radio sides on two meshes (radios that never heard each other) and
// one XMPP side: what the room says goes out on both; a text from one mesh
// reaches the room once and the other mesh once, never back to its own.
func TestTwoMeshesOneRoom(t *testing.T) {
	sides := startRadioSides(t)
	alice, room, radioA, radioB, xmppLogs := sides.alice, sides.room, sides.radioA, sides.radioB, sides.xmppLogs
	ctx := context.Background()

	if _, err := alice.Say(ctx, room, "to both meshes"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() bool {
		return len(texts(radioA, "to both meshes")) == 1 && len(texts(radioB, "to both meshes")) == 1
	}, "the room's line did not reach both radios: A %q, B %q\n%s", texts(radioA, ""), texts(radioB, ""), xmppLogs)

	testutil.Eventually(t, 10*time.Second, func() bool { return radioA.Inject(radioA.TextPacket(0xa1b2c3d4, "from mesh A")) }, "radio A took no packet")
	alice.WaitMessage(t, 30*time.Second, func(m xmpptest.Message) bool { return strings.HasSuffix(m.Body, "from mesh A") })
	testutil.Eventually(t, 30*time.Second, func() bool { return len(texts(radioB, "from mesh A")) == 1 }, "the text from mesh A never reached mesh B\n%s", xmppLogs)

	// A marker through the whole path: what was counted has settled.
	testutil.Eventually(t, 10*time.Second, func() bool { return radioB.Inject(radioB.TextPacket(0xa1b2c3d5, "marker")) }, "radio B took no packet")
	testutil.Eventually(t, 30*time.Second, func() bool { return len(texts(radioA, "marker")) == 1 }, "the marker from mesh B never reached mesh A")
	checkCounts(t, []count{
		{"posts of the text from mesh A", bridgePosts(alice, "from mesh A"), 1},
		{"the text from mesh A back on radio A", len(texts(radioA, "from mesh A")), 0},
		{"the text from mesh A on radio B", len(texts(radioB, "from mesh A")), 1},
		{"the room's line on radio A", len(texts(radioA, "to both meshes")), 1},
		{"the room's line on radio B", len(texts(radioB, "to both meshes")), 1},
		{"the marker back on radio B", len(texts(radioB, "marker")), 0},
	})
	if got := texts(radioB, "from mesh A"); len(got) == 1 && !strings.HasPrefix(got[0], "Ana") {
		t.Errorf("the relayed text %q does not name its sender", got[0])
	}
}

// twoBridges starts a Prosody with alice in the room and two complete
// bridges, each with its own account, radio and embedded broker; extra
// arguments go to both.
func twoBridges(t *testing.T, extra ...string) (alice *xmpptest.Client, room string, radioA, radioB *meshsim.Radio, stopA func()) {
	t.Helper()
	// A non-anonymous room: the bridges see each other's real JIDs, and
	// trust each other by them.
	srv := xmpptest.StartProsody(t, xmpptest.WithAccount("bridge", "bridge-pw"), xmpptest.WithAccount("bridge2", "bridge-pw"),
		xmpptest.WithAccount("alice", "alice-pw"), xmpptest.WithPublicJIDs())
	room = "village@" + srv.MUCDomain
	alice = xmpptest.Dial(t, srv, "alice", "alice-pw")
	if err := alice.Join(context.Background(), room, "alice"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pw := bridgePasswordFile(t, dir)
	radioA, addrA := startRadioNum(t, 0x5eed000a)
	radioB, addrB := startRadioNum(t, 0x5eed000b)
	start := func(name, account, peer, radioAddr string) (*exec.Cmd, *safeBuffer) {
		args := append([]string{"--device", "tcp://" + radioAddr, "--mqtt-listen", "off", "--state-dir", filepath.Join(dir, name), "--text-interval", "100ms",
			"-j", account + "@" + srv.Domain, "--password-file", pw, "-r", room, "-n", name, "--xmpp-server", srv.Addr,
			"--peer-bridges", peer + "@" + srv.Domain}, extra...)
		cmd := exec.Command(binary, args...)
		cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+srv.CAFile)
		logs := &safeBuffer{}
		cmd.Stderr = logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() })
		return cmd, logs
	}
	bridgeA, logsA := start("meshbridge", "bridge", "bridge2", addrA)
	_, logsB := start("meshbridge2", "bridge2", "bridge", addrB)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("bridge A:\n%s\nbridge B:\n%s", logsA, logsB)
		}
	})
	// Each bridge says in the room that it sends through its radio, and
	// each knows the other.
	for nick, id := range map[string]string{"meshbridge": "!5eed000a", "meshbridge2": "!5eed000b"} {
		alice.WaitPresence(t, 60*time.Second, func(p xmpptest.Presence) bool {
			return p.Nick == nick && p.Type == "" && strings.Contains(p.Payload, `id="`+id+`"`)
		})
	}
	for nick, other := range map[string]string{"meshbridge": "meshbridge2 (radio !5eed000b)", "meshbridge2": "meshbridge (radio !5eed000a)"} {
		askStatusOf(t, alice, room, nick, func(s string) bool { return strings.Contains(s, "Other bridges here: "+other) }, "it knows the other bridge")
	}
	return alice, room, radioA, radioB, func() { bridgeA.Process.Signal(os.Interrupt); bridgeA.Wait() }
}

// bridgePosts counts the posts of either bridge in the room that contain s.
func bridgePosts(c *xmpptest.Client, s string) int {
	n := 0
	for _, m := range c.Messages() {
		if strings.HasPrefix(m.Nick, "meshbridge") && strings.Contains(m.Body, s) {
			n++
		}
	}
	return n
}

// Two complete bridges in one room, on one mesh (named alike): a text both
// radios hear is posted once; what the room says goes out once, from the
// lower-numbered radio, and is not posted back when the other radio hears
// it; when that bridge leaves, the other takes over.
func TestTwoBridgesOneMesh(t *testing.T) {
	alice, room, radioA, radioB, stopA := twoBridges(t, "--mesh", "valley")
	ctx := context.Background()

	p := radioA.TextPacket(0xa1b2c3d4, "heard by both")
	testutil.Eventually(t, 10*time.Second, func() bool { return radioA.Inject(p) }, "radio A took no packet")
	testutil.Eventually(t, 10*time.Second, func() bool { return radioB.Inject(p) }, "radio B took no packet")
	alice.WaitMessage(t, 30*time.Second, func(m xmpptest.Message) bool { return strings.HasSuffix(m.Body, "heard by both") })

	if _, err := alice.Say(ctx, room, "first line"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() bool { return len(texts(radioA, "first line")) == 1 }, "the room's line never reached radio A")
	// Radio B hears radio A send it: not a mesh text for the room.
	echo := radioB.TextPacket(0x5eed000a, texts(radioA, "first line")[0])
	testutil.Eventually(t, 10*time.Second, func() bool { return radioB.Inject(echo) }, "radio B took no packet")

	// A marker heard by B alone: bridge B holds it for A, then posts it
	// itself; what it held before was settled by then.
	testutil.Eventually(t, 10*time.Second, func() bool { return radioB.Inject(radioB.TextPacket(0xa1b2c3d4, "marker one")) }, "radio B took no packet")
	alice.WaitMessage(t, 30*time.Second, func(m xmpptest.Message) bool { return strings.HasSuffix(m.Body, "marker one") })

	stopA()
	alice.WaitPresence(t, 30*time.Second, func(p xmpptest.Presence) bool { return p.Nick == "meshbridge" && p.Type == "unavailable" })
	if _, err := alice.Say(ctx, room, "second line"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() bool { return len(texts(radioB, "second line")) == 1 }, "after A left, the room's line never reached radio B")
	testutil.Eventually(t, 10*time.Second, func() bool { return radioB.Inject(radioB.TextPacket(0xa1b2c3d4, "marker two")) }, "radio B took no packet")
	alice.WaitMessage(t, 30*time.Second, func(m xmpptest.Message) bool { return strings.HasSuffix(m.Body, "marker two") })

	checkCounts(t, []count{
		{"posts of the text both radios heard", bridgePosts(alice, "heard by both"), 1},
		{"first line on radio A", len(texts(radioA, "first line")), 1},
		{"first line on radio B", len(texts(radioB, "first line")), 0},
		{"first line posted back to the room", bridgePosts(alice, "first line"), 0},
		{"posts of marker one", bridgePosts(alice, "marker one"), 1},
		{"second line on radio B", len(texts(radioB, "second line")), 1},
	})
}

// Two complete bridges in one room, on two meshes: what the room says goes
// out on both; a text from one mesh reaches the room once and the other
// mesh once (relayed by the other bridge), never back to its own.
func TestTwoBridgesTwoMeshes(t *testing.T) {
	alice, room, radioA, radioB, _ := twoBridges(t)
	ctx := context.Background()
	if _, err := alice.Say(ctx, room, "to both meshes"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() bool {
		return len(texts(radioA, "to both meshes")) == 1 && len(texts(radioB, "to both meshes")) == 1
	}, "the room's line did not reach both radios: A %q, B %q", texts(radioA, ""), texts(radioB, ""))

	testutil.Eventually(t, 10*time.Second, func() bool { return radioA.Inject(radioA.TextPacket(0xa1b2c3d4, "from mesh A")) }, "radio A took no packet")
	alice.WaitMessage(t, 30*time.Second, func(m xmpptest.Message) bool { return strings.HasSuffix(m.Body, "from mesh A") })
	testutil.Eventually(t, 30*time.Second, func() bool { return len(texts(radioB, "from mesh A")) == 1 }, "the text from mesh A never reached mesh B")
	testutil.Eventually(t, 10*time.Second, func() bool { return radioB.Inject(radioB.TextPacket(0x13572468, "from mesh B")) }, "radio B took no packet")
	testutil.Eventually(t, 30*time.Second, func() bool { return len(texts(radioA, "from mesh B")) == 1 }, "the text from mesh B never reached mesh A")

	checkCounts(t, []count{
		{"posts of the text from mesh A", bridgePosts(alice, "from mesh A"), 1},
		{"posts of the text from mesh B", bridgePosts(alice, "from mesh B"), 1},
		{"the text from mesh A back on radio A", len(texts(radioA, "from mesh A")), 0},
		{"the text from mesh B back on radio B", len(texts(radioB, "from mesh B")), 0},
		{"the room's line on radio A", len(texts(radioA, "to both meshes")), 1},
		{"the room's line on radio B", len(texts(radioB, "to both meshes")), 1},
	})
	if got := texts(radioB, "from mesh A"); len(got) == 1 && !strings.HasPrefix(got[0], "Ana") {
		t.Errorf("the relayed text %q does not name its sender", got[0])
	}
}
