//go:build integration

package xmppgw_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/creack/pty"
	"google.golang.org/protobuf/proto"
	"mellium.im/xmpp/jid"

	"github.com/jshiffer/lora-xmpp-bridge/broker"
	"github.com/jshiffer/lora-xmpp-bridge/internal/meshsim"
	"github.com/jshiffer/lora-xmpp-bridge/internal/spool"
	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
	"github.com/jshiffer/lora-xmpp-bridge/internal/xmpptest"
	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/serialgw"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
	"github.com/jshiffer/lora-xmpp-bridge/xmppgw"
)

const wait = 30 * time.Second

func testLog() *slog.Logger {
	if os.Getenv("TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// bridge is the whole daemon in miniature: a simulated radio on a real
// pseudo-terminal, the radio link, the embedded broker and the XMPP gateway.
type bridge struct {
	radio *meshsim.Radio
	xmpp  *xmppgw.Gateway
	err   chan error // what the XMPP gateway's Run returned

	ctx   context.Context
	bus   *broker.Embedded
	cfg   xmppgw.Config
	stopX context.CancelFunc
}

// stopXMPP stops the XMPP gateway (as when the daemon is killed), leaving
// the radio link and the broker running.
func (br *bridge) stopXMPP(t *testing.T) {
	br.stopX()
	<-br.err
}

// startXMPP starts a new XMPP gateway with the same configuration (and
// spool), as after a restart of the daemon.
func (br *bridge) startXMPP(t *testing.T) {
	xg, err := xmppgw.New(br.cfg, br.bus, testLog())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(br.ctx)
	br.xmpp, br.stopX, br.err = xg, cancel, make(chan error, 1)
	go func() { br.err <- xg.Run(ctx) }()
	// As the daemon does: nothing reaches the radio before the gateway
	// listens on the broker.
	select {
	case <-xg.Subscribed():
	case err := <-br.err:
		t.Fatalf("XMPP gateway ended before it subscribed: %v", err)
	}
}

func startBridge(t *testing.T, srv *xmpptest.Server, room jid.JID, tune func(*xmppgw.Config), tuneLink ...func(*serialgw.Config)) *bridge {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	simCfg := meshsim.Demo()
	simCfg.TrafficInterval = 0
	radio := meshsim.New(simCfg)
	master, slave, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	go radio.Serve(ctx, master)

	b, err := broker.NewEmbedded(broker.Config{Listen: broker.Off}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	linkCfg := serialgw.Config{
		Device: serialgw.Device{Kind: "serial", Addr: slave.Name()}, Encrypt: true, StateDir: t.TempDir(),
		TextInterval: 2100 * time.Millisecond, BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
	}
	for _, f := range tuneLink {
		f(&linkCfg)
	}
	link, err := serialgw.New(linkCfg, b, testLog())
	if err != nil {
		t.Fatal(err)
	}
	cfg := xmppgw.Config{
		JID: jid.MustParse("bridge@" + srv.Domain), Password: "bridge-pw", Server: srv.Addr, RootCAs: srv.RootCAs(),
		Rooms:        []xmppgw.Room{{JID: room, Nick: "meshbridge"}},
		PingInterval: time.Second, PingTimeout: 2 * time.Second, SelfPingInterval: 2 * time.Second,
		RejoinDelay: 200 * time.Millisecond, BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
		ResendGrace: time.Second,
	}
	if tune != nil {
		tune(&cfg)
	}
	linkDone := make(chan error, 1)
	br := &bridge{radio: radio, ctx: ctx, bus: b, cfg: cfg}
	go func() { linkDone <- link.Run(ctx) }()
	br.startXMPP(t)
	t.Cleanup(func() {
		cancel()
		<-linkDone
		b.Close()
		master.Close()
		slave.Close()
	})
	testutil.Eventually(t, wait, radio.Ready, "radio link never came up")
	return br
}

// startRoom starts a server with a room that alice has joined (and so owns).
func startRoom(t *testing.T) (*xmpptest.Server, jid.JID, *xmpptest.Client) {
	srv, room := startServer(t)
	alice := xmpptest.Dial(t, srv, "alice", "alice-pw")
	if err := alice.Join(context.Background(), room.String(), "alice"); err != nil {
		t.Fatal(err)
	}
	return srv, room, alice
}

func openSpool(t *testing.T) *spool.Store {
	store, err := spool.Open(filepath.Join(t.TempDir(), "spool.db"), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

func startServer(t *testing.T) (*xmpptest.Server, jid.JID) {
	srv := xmpptest.StartProsody(t, xmpptest.WithAccount("bridge", "bridge-pw"), xmpptest.WithAccount("alice", "alice-pw"))
	return srv, jid.MustParse("village@" + srv.MUCDomain)
}

// waitBridgeJoined waits until the bridge's occupant shows in the room, seen
// by alice as a message the bridge posts (a mesh text).
func meshToRoom(t *testing.T, br *bridge, alice *xmpptest.Client, text string) xmpptest.Message {
	t.Helper()
	br.radio.Inject(br.radio.TextPacket(0xa1b2c3d4, text))
	return alice.WaitMessage(t, wait, func(m xmpptest.Message) bool { return strings.HasSuffix(m.Body, text) })
}

func received(r *meshsim.Radio) []string {
	var out []string
	for _, p := range r.Received() {
		out = append(out, string(p.GetDecoded().GetPayload()))
	}
	return out
}

func TestMeshAndRoom(t *testing.T) {
	srv, room, alice := startRoom(t)
	ctx := context.Background()
	// Said before the bridge joined: history, never replayed into the mesh.
	if _, err := alice.Say(ctx, room.String(), "said before the bridge came"); err != nil {
		t.Fatal(err)
	}
	br := startBridge(t, srv, room, nil)

	// Mesh -> room, with the sender's name and a stable origin id.
	m := meshToRoom(t, br, alice, "Hello from the ridge 🌄")
	if m.Body != "Ana's T-Beam: Hello from the ridge 🌄" || !strings.HasPrefix(m.OriginID, "mesh-a1b2c3d4-") || m.Nick != "meshbridge" {
		t.Errorf("room got %+v", m)
	}
	// No channel binding unless asked for; Prosody 0.12 has no SCRAM-SHA-256.
	if got := br.xmpp.Mechanism(); got != "SCRAM-SHA-1" {
		t.Errorf("logged in with %q, want SCRAM-SHA-1", got)
	}

	// Room -> mesh, as "nick: text".
	if _, err := alice.Say(ctx, room.String(), "Hi mesh, from the room"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, wait, func() bool { return len(br.radio.Received()) >= 1 }, "radio got nothing")
	if got := received(br.radio); got[0] != "alice: Hi mesh, from the room" {
		t.Errorf("radio got %q", got)
	}

	// A long message with emoji and CJK becomes numbered chunks, nothing lost.
	long := strings.Repeat("Water pump fixed 👨‍👩‍👧‍👦 🇺🇦 ", 6) + strings.Repeat("日本語のテキスト", 10) + " end."
	if len(long) < 550 {
		t.Fatalf("test text only %d bytes", len(long))
	}
	if _, err := alice.Say(ctx, room.String(), long); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 60*time.Second, func() bool {
		got := received(br.radio)
		return len(got) > 1 && strings.HasSuffix(got[len(got)-1], "end.")
	}, "chunks did not all arrive: %q", received(br.radio))
	chunks := received(br.radio)[1:]
	var rejoined strings.Builder
	for i, c := range chunks {
		if len(c) > 200 || !utf8.ValidString(c) {
			t.Errorf("chunk %d: %d bytes, valid UTF-8 %v", i, len(c), utf8.ValidString(c))
		}
		prefix := "alice (" + string(rune('1'+i)) + "/" + string(rune('0'+len(chunks))) + "): "
		body, ok := strings.CutPrefix(c, prefix)
		if !ok {
			t.Errorf("chunk %d %q lacks %q", i, c, prefix)
		}
		rejoined.WriteString(body)
	}
	if strip(rejoined.String()) != strip(long) {
		t.Errorf("chunks lost text:\n got %q\nwant %q", rejoined.String(), long)
	}
	if br.radio.RateLimited() != 0 {
		t.Errorf("radio rate-limited %d chunks", br.radio.RateLimited())
	}

	// Nothing echoed: neither the bridge's own posts nor the history.
	for _, s := range received(br.radio) {
		if strings.Contains(s, "ridge") || strings.Contains(s, "before the bridge") {
			t.Errorf("echoed into the mesh: %q", s)
		}
	}
	n := 0
	for _, m := range alice.Messages() {
		if strings.HasSuffix(m.Body, "Hello from the ridge 🌄") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("mesh text shown %d times", n)
	}
}

func strip(s string) string { return strings.Join(strings.Fields(s), "") }

// With channel binding asked for, the login uses SCRAM-SHA-1-PLUS where the
// server offers it: Prosody 0.12 does only under TLS 1.2 (tls-unique), so
// the connection is held to TLS 1.2. Without it asked for, the same
// connection logs in with plain SCRAM.
func TestChannelBinding(t *testing.T) {
	srv, room, alice := startRoom(t)
	tls12 := func(c *xmppgw.Config) { xmppgw.SetMaxTLS(c, tls.VersionTLS12) }
	br := startBridge(t, srv, room, func(c *xmppgw.Config) { c.ChannelBinding = true; tls12(c) })
	meshToRoom(t, br, alice, "bound")
	if got := br.xmpp.Mechanism(); got != "SCRAM-SHA-1-PLUS" {
		t.Errorf("logged in with %q, want SCRAM-SHA-1-PLUS", got)
	}

	br.stopXMPP(t)
	br.cfg.ChannelBinding = false
	br.startXMPP(t)
	meshToRoom(t, br, alice, "not bound")
	if got := br.xmpp.Mechanism(); got != "SCRAM-SHA-1" {
		t.Errorf("without channel binding logged in with %q, want SCRAM-SHA-1", got)
	}
}

// Kicked, the bridge rejoins after a pause and bridges again.
func TestKickRejoin(t *testing.T) {
	srv, room := startServer(t)
	ctx := context.Background()
	alice := xmpptest.Dial(t, srv, "alice", "alice-pw")
	if err := alice.Join(ctx, room.String(), "alice"); err != nil { // the room's owner
		t.Fatal(err)
	}
	br := startBridge(t, srv, room, nil)
	meshToRoom(t, br, alice, "before the kick")
	if err := alice.Kick(ctx, room.String(), "meshbridge", "testing"); err != nil {
		t.Fatal(err)
	}
	kicked := alice.WaitPresence(t, wait, func(p xmpptest.Presence) bool {
		return p.Nick == "meshbridge" && p.Type == "unavailable" && p.HasCode(307)
	})
	// Back in the room: a new presence after the kick, then it bridges.
	alice.WaitPresence(t, wait, func(p xmpptest.Presence) bool {
		return p.Nick == "meshbridge" && p.Type == "" && p.Received.After(kicked.Received)
	})
	meshToRoom(t, br, alice, "after the kick")
}

// A server restart: the bridge reconnects, rejoins, and messages flow again.
func TestServerRestart(t *testing.T) {
	srv, room, alice := startRoom(t)
	ctx := context.Background()
	br := startBridge(t, srv, room, nil)
	meshToRoom(t, br, alice, "before the restart")
	srv.Stop()
	srv.Start()
	alice2 := xmpptest.Dial(t, srv, "alice", "alice-pw")
	if err := alice2.Join(ctx, room.String(), "alice"); err != nil {
		t.Fatal(err)
	}
	meshToRoom(t, br, alice2, "after the restart")
	if _, err := alice2.Say(ctx, room.String(), "room is back"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, wait, func() bool {
		got := received(br.radio)
		return len(got) > 0 && got[len(got)-1] == "alice: room is back"
	}, "radio got %q", received(br.radio))
}

// A wrong password is a clear, final error, not a retry loop.
func TestBadPassword(t *testing.T) {
	srv, room := startServer(t)
	br := startBridge(t, srv, room, func(c *xmppgw.Config) { c.Password = "wrong" })
	select {
	case err := <-br.err:
		if !errors.Is(err, xmppgw.ErrAuth) {
			t.Errorf("Run = %v, want ErrAuth", err)
		}
		if strings.Contains(err.Error(), "wrong") {
			t.Errorf("error shows the password: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("bad password not reported")
	}
}

// Mesh-side failures reach the sender as words in the room: a refused
// chunk (here the firmware's rate limit, provoked by pacing below it), and a
// message too long to send at all.
func TestFailuresReachTheRoom(t *testing.T) {
	srv, room, alice := startRoom(t)
	ctx := context.Background()
	br := startBridge(t, srv, room, func(c *xmppgw.Config) { c.MaxChunks = 2 },
		func(c *serialgw.Config) { c.TextInterval = time.Millisecond })
	meshToRoom(t, br, alice, "bridge is up")

	two := strings.Repeat("word ", 50) // two chunks, sent back to back
	if _, err := alice.Say(ctx, room.String(), two); err != nil {
		t.Fatal(err)
	}
	alice.WaitMessage(t, wait, func(m xmpptest.Message) bool {
		return m.Nick == "meshbridge" && strings.Contains(m.Body, "alice: your message “word word word") &&
			strings.Contains(m.Body, "(part 2/2) did not reach the mesh") && strings.Contains(m.Body, "rate limit")
	})
	if _, err := alice.Say(ctx, room.String(), strings.Repeat("word ", 200)); err != nil {
		t.Fatal(err)
	}
	alice.WaitMessage(t, wait, func(m xmpptest.Message) bool {
		return m.Nick == "meshbridge" && strings.Contains(m.Body, "would take 6 mesh packets; at most 2")
	})
	if n := len(br.radio.Received()); n != 1 {
		t.Errorf("radio received %d packets, want only the first chunk", n)
	}
}

// Someone already uses the bridge's nick: it takes a suffix and bridges anyway.
func TestNickConflict(t *testing.T) {
	srv, room := startServer(t)
	ctx := context.Background()
	srv.AddAccount("mallory", "mallory-pw")
	alice := xmpptest.Dial(t, srv, "alice", "alice-pw")
	if err := alice.Join(ctx, room.String(), "alice"); err != nil {
		t.Fatal(err)
	}
	mallory := xmpptest.Dial(t, srv, "mallory", "mallory-pw")
	if err := mallory.Join(ctx, room.String(), "meshbridge"); err != nil {
		t.Fatal(err)
	}
	br := startBridge(t, srv, room, nil)
	if m := meshToRoom(t, br, alice, "still bridged"); m.Nick != "meshbridge2" {
		t.Errorf("bridge posted as %q", m.Nick)
	}
	// The impostor's words are not the bridge's: they go to the mesh.
	if _, err := mallory.Say(ctx, room.String(), "I am not the bridge"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, wait, func() bool { return len(br.radio.Received()) == 1 }, "radio got %q", received(br.radio))
	if got := received(br.radio)[0]; got != "meshbridge: I am not the bridge" {
		t.Errorf("radio got %q", got)
	}
}

// A server that stops answering without closing the connection is noticed
// by the keepalive ping; once it answers again, so does the bridge.
func TestFrozenServer(t *testing.T) {
	srv, room, alice := startRoom(t)
	ctx := context.Background()
	br := startBridge(t, srv, room, nil)
	meshToRoom(t, br, alice, "before the freeze")
	srv.Freeze()
	// Posted into the frozen server's socket: no reflection comes back, so
	// the bridge cannot know whether the room got it.
	br.radio.Inject(br.radio.TextPacket(0xa1b2c3d4, "during the freeze"))
	testutil.Eventually(t, wait, func() bool { return br.xmpp.Stats.Disconnects.Load() >= 1 }, "frozen server not noticed")
	srv.Thaw()
	alice2 := xmpptest.Dial(t, srv, "alice", "alice-pw")
	if err := alice2.Join(ctx, room.String(), "alice2"); err != nil {
		t.Fatal(err)
	}
	meshToRoom(t, br, alice2, "after the thaw")
	// The message from the freeze is in the room exactly once, whether the
	// server took it from the old connection or the bridge resent it: the
	// archive tells the bridge which.
	alice3 := xmpptest.Dial(t, srv, "alice", "alice-pw")
	if err := alice3.JoinWithHistory(ctx, room.String(), "alice3"); err != nil {
		t.Fatal(err)
	}
	alice3.WaitMessage(t, wait, func(m xmpptest.Message) bool { return strings.HasSuffix(m.Body, "after the thaw") })
	n := 0
	for _, m := range alice3.Messages() {
		if strings.HasSuffix(m.Body, "during the freeze") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("the message posted during the freeze is in the room %d times", n)
	}
}

// The happy path against ejabberd, so we know we did not fit one server's quirks.
func TestEjabberd(t *testing.T) {
	srv := xmpptest.StartEjabberd(t, xmpptest.WithAccount("bridge", "bridge-pw"), xmpptest.WithAccount("alice", "alice-pw"))
	room := jid.MustParse("village@" + srv.MUCDomain)
	ctx := context.Background()
	alice := xmpptest.Dial(t, srv, "alice", "alice-pw")
	if err := alice.Join(ctx, room.String(), "alice"); err != nil {
		t.Fatal(err)
	}
	br := startBridge(t, srv, room, nil)
	m := meshToRoom(t, br, alice, "Hello ejabberd")
	if m.Body != "Ana's T-Beam: Hello ejabberd" {
		t.Errorf("room got %q", m.Body)
	}
	if got := br.xmpp.Mechanism(); got != "SCRAM-SHA-256" {
		t.Errorf("logged in with %q, want SCRAM-SHA-256", got)
	}
	if _, err := alice.Say(ctx, room.String(), "Hi from ejabberd"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, wait, func() bool { return len(br.radio.Received()) == 1 }, "radio got nothing")
	if got := received(br.radio)[0]; got != "alice: Hi from ejabberd" {
		t.Errorf("radio got %q", got)
	}
}

// What people said in the room while the bridge was down reaches the mesh
// once, caught up from the room's archive; mesh texts heard while the XMPP
// server is down are kept on disk, survive a restart of the bridge, and
// reach the room once each, in order.
func TestRestartKeepsMessages(t *testing.T) {
	srv, room, alice := startRoom(t)
	ctx := context.Background()
	store := openSpool(t)
	br := startBridge(t, srv, room, func(c *xmppgw.Config) { c.Spool = store })
	meshToRoom(t, br, alice, "first")

	// The bridge is down while the room talks.
	br.stopXMPP(t)
	if _, err := alice.Say(ctx, room.String(), "said while the bridge was away"); err != nil {
		t.Fatal(err)
	}
	br.startXMPP(t)
	away := func() int {
		n := 0
		for _, s := range received(br.radio) {
			if s == "alice: said while the bridge was away" {
				n++
			}
		}
		return n
	}
	testutil.Eventually(t, wait, func() bool { return away() == 1 }, "room message from the gap not sent to the mesh: %q", received(br.radio))

	// The XMPP server goes down; the mesh keeps talking; the bridge is
	// restarted meanwhile.
	srv.Stop()
	for _, text := range []string{"heard 1", "heard 2", "heard 3"} {
		br.radio.Inject(br.radio.TextPacket(0xa1b2c3d4, text))
	}
	testutil.Eventually(t, wait, func() bool {
		n, _, _, _ := store.Stats("to-room:" + room.String())
		return n == 3
	}, "mesh texts not kept on disk")
	br.stopXMPP(t)
	srv.Start()
	alice2 := xmpptest.Dial(t, srv, "alice", "alice-pw")
	if err := alice2.Join(ctx, room.String(), "alice"); err != nil {
		t.Fatal(err)
	}
	br.startXMPP(t)
	for _, text := range []string{"heard 1", "heard 2", "heard 3"} {
		alice2.WaitMessage(t, wait, func(m xmpptest.Message) bool { return strings.HasSuffix(m.Body, text) })
	}
	// Once more across another restart: nothing is repeated.
	br.stopXMPP(t)
	br.startXMPP(t)
	meshToRoom(t, br, alice2, "after the second restart")
	var order []string
	for _, m := range alice2.Messages() {
		if strings.Contains(m.Body, "heard ") {
			order = append(order, strings.TrimPrefix(m.Body, "Ana's T-Beam: "))
		}
	}
	if strings.Join(order, ",") != "heard 1,heard 2,heard 3" {
		t.Errorf("room got %q, want each once, in order", order)
	}
	if n := away(); n != 1 {
		t.Errorf("the room message reached the mesh %d times", n)
	}
	// Each is removed from disk once the room's reflection confirms it.
	testutil.Eventually(t, wait, func() bool {
		n, _, _, _ := store.Stats("to-room:" + room.String())
		return n == 0
	}, "mesh texts left on disk after delivery")
}

// Fault injection: the XMPP server stopped while 50 mesh texts arrive (and
// the bridge restarted meanwhile); with the server back, all 50 are in the
// room, in order, each once, marked with when they were heard if late.
func TestServerDownFiftyTexts(t *testing.T) {
	srv, room, alice := startRoom(t)
	ctx := context.Background()
	store := openSpool(t)
	br := startBridge(t, srv, room, func(c *xmppgw.Config) { c.Spool = store })
	meshToRoom(t, br, alice, "before")

	srv.Stop()
	for i := 1; i <= 50; i++ {
		br.radio.Inject(br.radio.TextPacket(0xa1b2c3d4, fmt.Sprintf("text %02d", i)))
	}
	testutil.Eventually(t, wait, func() bool {
		n, _, _, _ := store.Stats("to-room:" + room.String())
		return n == 50
	}, "texts not kept while the server is down")
	br.stopXMPP(t)
	srv.Start()
	alice2 := xmpptest.Dial(t, srv, "alice", "alice-pw")
	if err := alice2.Join(ctx, room.String(), "alice"); err != nil {
		t.Fatal(err)
	}
	br.startXMPP(t)
	alice2.WaitMessage(t, wait, func(m xmpptest.Message) bool { return strings.HasSuffix(m.Body, "text 50") })
	meshToRoom(t, br, alice2, "after") // anything still in flight is out by now
	var got []string
	for _, m := range alice2.Messages() {
		if _, text, ok := strings.Cut(m.Body, "text "); ok {
			got = append(got, text)
		}
	}
	var want []string
	for i := 1; i <= 50; i++ {
		want = append(want, fmt.Sprintf("%02d", i))
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("room got %d texts: %v", len(got), got)
	}
}

// The keepalive and the self-pings belong to their connection: none of
// them is left once the connection is gone, whether it failed (a frozen
// server, with self-pings still waiting for answers) or the gateway stopped.
func TestNothingOutlivesTheSession(t *testing.T) {
	srv, room, alice := startRoom(t)
	br := startBridge(t, srv, room, func(c *xmppgw.Config) {
		c.PingInterval, c.PingTimeout, c.SelfPingInterval = time.Second, 3*time.Second, time.Second
	})
	meshToRoom(t, br, alice, "in the room")
	pending := func() bool {
		s := strings.Join(connGoroutines(), "\n")
		return strings.Contains(s, "(*conn).keepalive") && strings.Contains(s, "(*conn).selfPing")
	}

	srv.Freeze()
	testutil.Eventually(t, wait, pending, "no keepalive and self-ping waiting for the frozen server")
	testutil.Eventually(t, wait, func() bool { return br.xmpp.Stats.Disconnects.Load() >= 1 }, "frozen server not noticed")
	// The new connection cannot log in to the frozen server, so every
	// goroutine of a connection left now is the old one's.
	if left := connGoroutines(); len(left) > 0 {
		t.Errorf("%d goroutines of the lost connection outlived it:\n%s", len(left), strings.Join(left, "\n\n"))
	}

	srv.Thaw()
	alice2 := xmpptest.Dial(t, srv, "alice", "alice-pw")
	if err := alice2.Join(context.Background(), room.String(), "alice2"); err != nil {
		t.Fatal(err)
	}
	meshToRoom(t, br, alice2, "back in the room")
	br.stopXMPP(t)
	if left := connGoroutines(); len(left) > 0 {
		t.Errorf("%d goroutines of the connection outlived Run:\n%s", len(left), strings.Join(left, "\n\n"))
	}
}

// connFrame matches a frame of a conn method, inlined or not (an inlined
// method's closure is named after the caller it was inlined into).
var connFrame = regexp.MustCompile(`lora-xmpp-bridge/xmppgw\.\S*\(\*conn\)\.`)

// connGoroutines returns the stacks of the goroutines working for an XMPP
// connection of the gateway.
func connGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if connFrame.MatchString(g) {
			out = append(out, g)
		}
	}
	return out
}

// refusalNotices are the bridge's notices of what did not reach the mesh.
func refusalNotices(c *xmpptest.Client) []string {
	var out []string
	for _, m := range c.Messages() {
		if m.Nick == "meshbridge" && strings.Contains(m.Body, "did not reach the mesh") {
			out = append(out, m.Body)
		}
	}
	return out
}

// Many room messages refused at once (the radio's queue full) are told in
// one notice that names who said what, not one identical line per message.
func TestRefusalsToldOnce(t *testing.T) {
	srv, room, alice := startRoom(t)
	ctx := context.Background()
	srv.AddAccount("bob", "bob-pw")
	bob := xmpptest.Dial(t, srv, "bob", "bob-pw")
	if err := bob.Join(ctx, room.String(), "bob"); err != nil {
		t.Fatal(err)
	}
	// Texts an hour apart and a queue of three: after the first text, three
	// wait and the rest are refused.
	br := startBridge(t, srv, room, nil, func(c *serialgw.Config) { c.TextInterval, c.QueueLimit = time.Hour, 3 })
	meshToRoom(t, br, alice, "bridge is up")
	if _, err := alice.Say(ctx, room.String(), "goes out at once"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, wait, func() bool { return len(br.radio.Received()) == 1 }, "radio got %q", received(br.radio))
	for i := 1; i <= 10; i++ {
		who := map[bool]*xmpptest.Client{true: alice, false: bob}[i%2 == 1]
		if _, err := who.Say(ctx, room.String(), fmt.Sprintf("note %d, with a few more words than a notice quotes", i)); err != nil {
			t.Fatal(err)
		}
	}
	first := alice.WaitMessage(t, wait, func(m xmpptest.Message) bool {
		return m.Nick == "meshbridge" && strings.Contains(m.Body, "did not reach the mesh")
	})
	for _, want := range []string{"⚠ 7 messages did not reach the mesh: too much at once", "\n• alice: “note ", "\n• bob: “note ", "\n• and 2 more, from "} {
		if !strings.Contains(first.Body, want) {
			t.Errorf("notice lacks %q:\n%s", want, first.Body)
		}
	}
	if strings.Contains(first.Body, "quotes") {
		t.Errorf("notice quotes whole messages:\n%s", first.Body)
	}
	// A refusal after the burst is a notice of its own; by the time it
	// shows, every notice of the burst has.
	if _, err := bob.Say(ctx, room.String(), "later, on its own"); err != nil {
		t.Fatal(err)
	}
	alice.WaitMessage(t, wait, func(m xmpptest.Message) bool {
		return m.Nick == "meshbridge" && strings.HasPrefix(m.Body, "⚠ bob: your message “later, on its own” did not reach the mesh")
	})
	if n := refusalNotices(alice); len(n) != 2 {
		t.Errorf("%d notices of refusals, want 2:\n%s", len(n), strings.Join(n, "\n---\n"))
	}
}

// A local tool floods the mesh: once the bridge's airtime share holds
// packets back, the room is told, once, and !status says so too.
func TestAirtimeBlockedTold(t *testing.T) {
	srv, room, alice := startRoom(t)
	ctx := context.Background()
	// A window of a minute instead of an hour: a share of 3 s of airtime,
	// a bucket of 0.3 s; one full-size LongFast packet takes 2.2 s.
	br := startBridge(t, srv, room, nil, func(c *serialgw.Config) { c.AirtimeWindow = time.Minute })
	meshToRoom(t, br, alice, "bridge is up")
	for i := uint32(1); i <= 3; i++ {
		b, _ := proto.Marshal(&meshpb.ServiceEnvelope{GatewayId: "local-tool", Packet: &meshpb.MeshPacket{Id: i, To: mesh.Broadcast,
			PayloadVariant: &meshpb.MeshPacket_Decoded{Decoded: &meshpb.Data{Portnum: meshpb.PortNum_PRIVATE_APP, Payload: make([]byte, 233)}}}})
		if err := br.bus.Publish(topics.MeshTX, b, false); err != nil {
			t.Fatal(err)
		}
	}
	alice.WaitMessage(t, wait, func(m xmpptest.Message) bool {
		return m.Nick == "meshbridge" && strings.Contains(m.Body, "used its share of the mesh's airtime")
	})
	if _, err := alice.Say(ctx, room.String(), "!status"); err != nil {
		t.Fatal(err)
	}
	alice.WaitMessage(t, wait, func(m xmpptest.Message) bool {
		return m.Nick == "meshbridge" && strings.HasPrefix(m.Body, "Radio !5eed0001 is connected") && strings.Contains(m.Body, "airtime share is spent")
	})
	n := 0
	for _, m := range alice.Messages() {
		if strings.Contains(m.Body, "used its share of the mesh's airtime") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("told %d times, want once", n)
	}
}

// A room message whose send request the radio link lost (it died between
// taking the request from the broker and keeping it) is offered again when
// the link comes back, also by a gateway restarted meanwhile, until the
// link reports on it; then never again. The test plays the radio link on
// the broker, to lose a request at exactly that point.
func TestLostSendRequestOfferedAgain(t *testing.T) {
	srv, room, alice := startRoom(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b, err := broker.NewEmbedded(broker.Config{Listen: broker.Off}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var mu sync.Mutex
	var offered []topics.SendRequest
	const radioID = "!5eed0001"
	unsub, err := b.Subscribe(topics.MeshTXTo(radioID), func(_ string, p []byte) {
		req, err := topics.ParseSendRequest(p)
		if err != nil {
			t.Errorf("undecodable send request: %v", err)
			return
		}
		mu.Lock()
		offered = append(offered, req)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unsub()
	offers := func() []topics.SendRequest {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(offered)
	}
	link := func(state topics.LinkState) {
		t.Helper()
		rec, _ := json.Marshal(topics.StatusRecord{State: state, Since: time.Now().UTC().Format(time.RFC3339)})
		if err := b.Publish(topics.Status(radioID), rec, true); err != nil {
			t.Fatal(err)
		}
	}
	rec, _ := json.Marshal(topics.RadioRecord{ID: radioID, Num: 0x5eed0001})
	if err := b.Publish(topics.Radio(radioID), rec, true); err != nil {
		t.Fatal(err)
	}
	link(topics.LinkOnline)

	cfg := xmppgw.Config{
		JID: jid.MustParse("bridge@" + srv.Domain), Password: "bridge-pw", Server: srv.Addr, RootCAs: srv.RootCAs(),
		Rooms: []xmppgw.Room{{JID: room, Nick: "meshbridge"}}, Spool: openSpool(t),
		BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
	}
	run := func() (stop func()) {
		g, err := xmppgw.New(cfg, b, testLog())
		if err != nil {
			t.Fatal(err)
		}
		gctx, gcancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- g.Run(gctx) }()
		testutil.Eventually(t, wait, g.Connected, "bridge never connected")
		return func() { gcancel(); <-done }
	}
	stop := run()
	alice.WaitPresence(t, wait, func(p xmpptest.Presence) bool { return p.Nick == "meshbridge" && p.Type == "" })
	if _, err := alice.Say(ctx, room.String(), "lost on the way"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, wait, func() bool { return len(offers()) == 1 }, "the room message was never offered to the radio link")
	first := offers()[0]
	if got := string(first.Data.GetPayload()); got != "alice: lost on the way" {
		t.Fatalf("offered %q", got)
	}

	// The link goes away and comes back: what it never reported on is offered again.
	link(topics.LinkDisconnected)
	link(topics.LinkOnline)
	testutil.Eventually(t, wait, func() bool { return len(offers()) == 2 }, "not offered again when the link came back")

	// Across a restart of the gateway, too (the link's records are retained).
	stop()
	stop = run()
	defer func() { stop() }()
	testutil.Eventually(t, wait, func() bool { return len(offers()) == 3 }, "not offered again after a restart")
	for _, req := range offers() {
		if req.ID != first.ID || !proto.Equal(req.Data, first.Data) || req.Origin != topics.OriginXMPP {
			t.Errorf("offered again as %+v, want the same request as %+v", req, first)
		}
	}

	// Once the link reports on it, it is not offered again.
	res, _ := topics.Result{Origin: topics.OriginXMPP, RequestID: first.ID, Reason: meshpb.Routing_NONE}.Marshal()
	if err := b.Publish(topics.MeshResult, res, false); err != nil {
		t.Fatal(err)
	}
	// A second room message, offered after the result, marks that the
	// result was taken in (one intake loop, in order).
	if _, err := alice.Say(ctx, room.String(), "second"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, wait, func() bool { return len(offers()) == 4 }, "the second room message was never offered")
	link(topics.LinkDisconnected)
	link(topics.LinkOnline)
	testutil.Eventually(t, wait, func() bool { return len(offers()) == 5 }, "the second message was not offered again")
	if got := offers()[4]; got.ID == first.ID {
		t.Errorf("the request the link reported on was offered again")
	}
	// The link reporting on the second, nothing is left: an empty outbox
	// offers nothing, as the broker's order shows with a third message.
	res, _ = topics.Result{Origin: topics.OriginXMPP, RequestID: offers()[4].ID, Reason: meshpb.Routing_NONE}.Marshal()
	b.Publish(topics.MeshResult, res, false)
	if _, err := alice.Say(ctx, room.String(), "third"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, wait, func() bool { return len(offers()) == 6 }, "the third room message was never offered")
	link(topics.LinkDisconnected)
	link(topics.LinkOnline)
	if _, err := alice.Say(ctx, room.String(), "fourth"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, wait, func() bool { return len(offers()) >= 8 }, "the fourth room message was never offered")
	var texts []string
	for _, req := range offers()[6:] {
		texts = append(texts, string(req.Data.GetPayload()))
	}
	if want := []string{"alice: third", "alice: fourth"}; !slices.Equal(texts, want) {
		t.Errorf("after the link came back: offered %q, want %q (only what it had not reported on)", texts, want)
	}
}
