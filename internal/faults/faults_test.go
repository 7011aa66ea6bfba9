//go:build integration

package faults_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/broker"
	"github.com/jshiffer/lora-xmpp-bridge/internal/meshsim"
	"github.com/jshiffer/lora-xmpp-bridge/internal/spool"
	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/serialgw"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// wait bounds every wait on a condition; none is expected to come close.
const wait = 20 * time.Second

// origin is the gateway id the XMPP gateway puts on its send requests.
const origin = "xmpp"

// jsonTopic is where the bridge publishes the firmware JSON of a packet
// heard on the primary channel of the simulated radio.
const jsonTopic = "msh/EU_868/2/json/LongFast/!5eed0001"

func testLog() *slog.Logger {
	if os.Getenv("TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// usb is a simulated radio on the master side of a real pseudo-terminal.
// The bridge opens the slave through a stable symlink, the way
// /dev/serial/by-id/ names a USB radio; replugging closes the pair and
// points the symlink at a fresh one.
type usb struct {
	t      *testing.T
	ctx    context.Context
	radio  *meshsim.Radio
	link   string
	line   *line
	master *os.File
	slave  *os.File
	serve  sync.WaitGroup
}

// line is the radio's end of the cable. It can go deaf: what the radio
// says no longer reaches the bridge, while what the bridge says still
// reaches the radio.
type line struct {
	f    *os.File
	mu   sync.Mutex
	deaf bool
}

func (l *line) Read(p []byte) (int, error) { return l.f.Read(p) }

func (l *line) Write(p []byte) (int, error) {
	l.mu.Lock()
	deaf := l.deaf
	l.mu.Unlock()
	if deaf {
		return len(p), nil
	}
	return l.f.Write(p)
}

func (l *line) setDeaf(deaf bool) {
	l.mu.Lock()
	l.deaf = deaf
	l.mu.Unlock()
}

func plugIn(t *testing.T, ctx context.Context, radio *meshsim.Radio) *usb {
	u := &usb{t: t, ctx: ctx, radio: radio, link: filepath.Join(t.TempDir(), "usb-Meshtastic_Sim-if00-port0")}
	u.plug()
	t.Cleanup(func() {
		u.unplug()
		u.serve.Wait()
	})
	return u
}

func (u *usb) device() serialgw.Device { return serialgw.Device{Kind: "serial", Addr: u.link} }

func (u *usb) plug() {
	m, s, err := pty.Open()
	if err != nil {
		u.t.Fatal(err)
	}
	testutil.MakeRaw(u.t, s)
	// pty.Open leaves the master in blocking mode, where Close waits for a
	// pending Read: the plug would come out only when the bridge next
	// writes. Non-blocking, Close takes effect at once, as an unplugged USB
	// radio does.
	fd, err := unix.Dup(int(m.Fd()))
	if err != nil {
		u.t.Fatal(err)
	}
	m.Close()
	if err := unix.SetNonblock(fd, true); err != nil {
		u.t.Fatal(err)
	}
	m = os.NewFile(uintptr(fd), "/dev/ptmx")
	tmp := u.link + ".new"
	os.Remove(tmp)
	if err := os.Symlink(s.Name(), tmp); err != nil {
		u.t.Fatal(err)
	}
	if err := os.Rename(tmp, u.link); err != nil {
		u.t.Fatal(err)
	}
	l := &line{f: m}
	u.master, u.slave, u.line = m, s, l
	u.serve.Add(1)
	go func() {
		defer u.serve.Done()
		_ = u.radio.Serve(u.ctx, l)
	}()
}

func (u *usb) unplug() {
	u.master.Close()
	u.slave.Close()
}

// replug pulls the radio out and plugs it back in: a new pty pair behind
// the same symlink.
func (u *usb) replug() {
	u.unplug()
	u.plug()
}

// bench is a simulated radio on a pty and the embedded broker; gateways
// are started on it separately, so a test can restart the bridge.
type bench struct {
	t      *testing.T
	ctx    context.Context
	radio  *meshsim.Radio
	usb    *usb
	broker *broker.Embedded
}

func newBench(t *testing.T, tuneSim func(*meshsim.Config)) *bench {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	simCfg := meshsim.Demo()
	simCfg.TrafficInterval = 0 // the tests say what the mesh says
	simCfg.TextRule = 40 * time.Millisecond
	if tuneSim != nil {
		tuneSim(&simCfg)
	}
	radio := meshsim.New(simCfg)
	b, err := broker.NewEmbedded(broker.Config{Listen: "127.0.0.1:0"}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return &bench{t: t, ctx: ctx, radio: radio, usb: plugIn(t, ctx, radio), broker: b}
}

// gateway is one run of the radio link, from New to the end of Run.
type gateway struct {
	*serialgw.Gateway
	stop func()
}

// start runs a radio link on the bench until stop or the end of the test,
// and waits for its first handshake.
func (b *bench) start(tune func(*serialgw.Config)) *gateway {
	t := b.t
	t.Helper()
	handshakes := b.radio.Handshakes()
	cfg := serialgw.Config{
		Device: b.usb.device(), Encrypt: true, StateDir: t.TempDir(),
		TextInterval: 60 * time.Millisecond, HeartbeatInterval: 2 * time.Second, ReplyTimeout: 2 * time.Second,
		HandshakeTimeout: 5 * time.Second, BackoffMin: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
	}
	if tune != nil {
		tune(&cfg)
	}
	gw, err := serialgw.New(cfg, b.broker, testLog())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan error, 1)
	go func() { done <- gw.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("gateway Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	b.waitHandshake(handshakes + 1)
	return &gateway{gw, stop}
}

// waitHandshake waits until the radio has completed n handshakes and the
// client is ready.
func (b *bench) waitHandshake(n int) {
	b.t.Helper()
	testutil.Eventually(b.t, wait, func() bool { return b.radio.Handshakes() == n && b.radio.Ready() },
		"handshakes %d, want %d (ready %v)", b.radio.Handshakes(), n, b.radio.Ready())
}

// send asks the radio link for a text on the primary channel, as the XMPP
// gateway does.
func (b *bench) send(id uint32, text string) {
	b.t.Helper()
	env, _ := proto.Marshal(&meshpb.ServiceEnvelope{
		GatewayId: origin, ChannelId: mesh.PresetName(b.radio.Config().Preset),
		Packet: &meshpb.MeshPacket{Id: id, To: mesh.Broadcast, PayloadVariant: &meshpb.MeshPacket_Decoded{Decoded: &meshpb.Data{
			Portnum: meshpb.PortNum_TEXT_MESSAGE_APP, Payload: []byte(text),
		}}},
	})
	if err := b.broker.Publish(topics.MeshTX, env, false); err != nil {
		b.t.Fatal(err)
	}
}

// results collects the outcomes the radio link reports on
// topics.MeshResult, by request id, in order.
type results struct {
	mu  sync.Mutex
	got map[uint32][]meshpb.Routing_Error
}

func (b *bench) results() *results {
	t := b.t
	res := &results{got: map[uint32][]meshpb.Routing_Error{}}
	unsub, err := b.broker.Subscribe(topics.MeshResult, func(_ string, p []byte) {
		var env meshpb.ServiceEnvelope
		var rt meshpb.Routing
		if proto.Unmarshal(p, &env) != nil || proto.Unmarshal(env.GetPacket().GetDecoded().GetPayload(), &rt) != nil {
			t.Errorf("undecodable result")
			return
		}
		if env.GetGatewayId() != origin {
			t.Errorf("result for origin %q", env.GetGatewayId())
		}
		id := env.GetPacket().GetDecoded().GetRequestId()
		res.mu.Lock()
		res.got[id] = append(res.got[id], rt.GetErrorReason())
		res.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unsub)
	return res
}

func (res *results) of(id uint32) []meshpb.Routing_Error {
	res.mu.Lock()
	defer res.mu.Unlock()
	return slices.Clone(res.got[id])
}

func (res *results) total() int {
	res.mu.Lock()
	defer res.mu.Unlock()
	n := 0
	for _, r := range res.got {
		n += len(r)
	}
	return n
}

// waitAll waits until every id has at least one result.
func (res *results) waitAll(t *testing.T, ids []uint32) {
	t.Helper()
	missing := func() []uint32 {
		var m []uint32
		for _, id := range ids {
			if len(res.of(id)) == 0 {
				m = append(m, id)
			}
		}
		return m
	}
	testutil.Eventually(t, wait, func() bool { return len(missing()) == 0 }, "no result yet for requests %v", missing())
}

// payloads lists the texts the radio accepted from the bridge, in order.
func payloads(radio *meshsim.Radio) []string {
	var s []string
	for _, p := range radio.Received() {
		s = append(s, string(p.GetDecoded().GetPayload()))
	}
	return s
}

// uplink counts what the bridge publishes for each heard packet, by
// (from, id): decoded envelopes on topics.MeshRX and firmware JSON.
type uplink struct {
	mu   sync.Mutex
	rx   map[[2]uint32]int
	json map[[2]uint32]int
}

func (b *bench) uplink() *uplink {
	t := b.t
	u := &uplink{rx: map[[2]uint32]int{}, json: map[[2]uint32]int{}}
	unsub, err := b.broker.Subscribe(topics.MeshRX, func(_ string, p []byte) {
		var env meshpb.ServiceEnvelope
		if err := proto.Unmarshal(p, &env); err != nil {
			t.Errorf("undecodable %s: %v", topics.MeshRX, err)
			return
		}
		u.mu.Lock()
		u.rx[[2]uint32{env.GetPacket().GetFrom(), env.GetPacket().GetId()}]++
		u.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unsub)
	unsub, err = b.broker.Subscribe(jsonTopic, func(_ string, p []byte) {
		var js struct{ From, ID uint32 }
		if err := json.Unmarshal(p, &js); err != nil {
			t.Errorf("undecodable JSON uplink %s: %v", p, err)
			return
		}
		u.mu.Lock()
		u.json[[2]uint32{js.From, js.ID}]++
		u.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unsub)
	return u
}

// counts returns how often the packet was published on topics.MeshRX and
// as JSON.
func (u *uplink) counts(p *meshpb.MeshPacket) (rx, js int) {
	k := [2]uint32{p.GetFrom(), p.GetId()}
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.rx[k], u.json[k]
}

// inject hands the bridge a packet as heard by the radio.
func (b *bench) inject(p *meshpb.MeshPacket) {
	b.t.Helper()
	if !b.radio.Inject(p) {
		b.t.Fatalf("radio could not deliver packet %08x to the bridge", p.GetId())
	}
}

// flush injects a fresh packet and waits until the bridge has published it
// on both topics. The bridge reads the line in order, so anything injected
// before it has been handled (published or dropped) by then.
func (b *bench) flush(u *uplink, text string) {
	b.t.Helper()
	marker := b.radio.TextPacket(0x13572468, text)
	b.inject(marker)
	testutil.Eventually(b.t, wait, func() bool { rx, js := u.counts(marker); return rx == 1 && js == 1 }, "marker %q not published", text)
}

// A USB radio unplugged and plugged back in twenty times while forty texts
// are requested: every text reaches the radio once, in the order asked,
// every request is reported accepted once, and every replug is one
// reconnect. The plug comes out right after two requests, typically with a
// packet just written: lost on the way (sent again), or taken by the radio
// with its confirmation lost (sent again with the same id, which the radio
// drops as a repeat; TestConfirmationLost pins that case down).
func TestReplugStorm(t *testing.T) {
	const replugs, texts = 20, 40
	b := newBench(t, nil)
	// Forty LongFast texts in a few seconds are more than the airtime
	// bucket's burst; airtime is not what this test is about.
	gw := b.start(func(c *serialgw.Config) { c.AirtimeShare = 1000 })
	res := b.results()

	var want []string
	var ids []uint32
	for i := range replugs {
		for range texts / replugs {
			n := len(ids)
			ids = append(ids, uint32(0x7000+n))
			want = append(want, fmt.Sprintf("bob: storm message %02d", n))
			b.send(ids[n], want[n])
		}
		b.usb.replug()
		b.waitHandshake(i + 2)
	}
	res.waitAll(t, ids)

	if got := payloads(b.radio); !slices.Equal(got, want) {
		t.Errorf("radio received %d texts:\n%s\nwant the %d requested, in order, each once:\n%s",
			len(got), strings.Join(got, "\n"), len(want), strings.Join(want, "\n"))
	}
	wire := map[uint32]int{}
	for _, p := range b.radio.Received() {
		wire[p.GetId()]++
	}
	for id, n := range wire {
		if n != 1 {
			t.Errorf("wire id %08x reached the radio %d times", id, n)
		}
	}
	for _, id := range ids {
		if got := res.of(id); !slices.Equal(got, []meshpb.Routing_Error{meshpb.Routing_NONE}) {
			t.Errorf("request %#x: results %v, want [NONE]", id, got)
		}
	}
	if n := res.total(); n != texts {
		t.Errorf("%d results for %d requests", n, texts)
	}
	if n := gw.Stats.Reconnects.Load(); n != replugs {
		t.Errorf("reconnects = %d, want %d", n, replugs)
	}
	if n := b.radio.RateLimited(); n != 0 {
		t.Errorf("radio rate-limited %d texts", n)
	}
	if n := gw.QueueLen(); n != 0 {
		t.Errorf("%d packets still queued", n)
	}
}

// The radio takes a packet and the plug comes out before its QueueStatus
// reaches the bridge. The bridge cannot tell whether the radio took it, so
// it sends it again after the next handshake with the same packet id, which
// the radio (like every node) recognises as the packet it already has: the
// mesh gets it once, and the request is reported sent once.
func TestConfirmationLost(t *testing.T) {
	b := newBench(t, nil)
	gw := b.start(nil)
	res := b.results()
	b.usb.line.setDeaf(true)
	b.send(0x51, "dave: did it go out?")
	testutil.Eventually(t, wait, func() bool { return len(b.radio.Received()) == 1 }, "radio took %d packets", len(b.radio.Received()))
	if r := res.of(0x51); len(r) != 0 {
		t.Fatalf("results %v before the radio's confirmation could arrive", r)
	}
	b.usb.replug()
	b.waitHandshake(2)
	// Only the radio's answer to the resend, with the first packet's id,
	// can complete the request.
	res.waitAll(t, []uint32{0x51})
	if r := res.of(0x51); !slices.Equal(r, []meshpb.Routing_Error{meshpb.Routing_NONE}) {
		t.Errorf("results %v, want [NONE]", r)
	}
	if got := payloads(b.radio); !slices.Equal(got, []string{"dave: did it go out?"}) {
		t.Errorf("radio sent %q, want the text once", got)
	}
	if n := gw.Stats.Sent.Load(); n != 1 {
		t.Errorf("sent = %d, want 1", n)
	}
	if n := gw.Stats.Reconnects.Load(); n != 1 {
		t.Errorf("reconnects = %d, want 1", n)
	}
}

// After the radio confirms a packet, the next one waits only for the text
// spacing, not for the next tick of the session loop (1 s with the default
// 60 s heartbeat).
func TestBacklogDrainsAtTextInterval(t *testing.T) {
	const texts = 6
	b := newBench(t, nil)
	b.start(func(c *serialgw.Config) { c.HeartbeatInterval = time.Minute }) // the default
	res := b.results()
	var ids []uint32
	start := time.Now()
	for i := range texts {
		ids = append(ids, uint32(0x60+i))
		b.send(ids[i], fmt.Sprintf("erin: backlog %d", i))
	}
	res.waitAll(t, ids)
	took := time.Since(start)
	// 5 gaps of 60 ms, and generous slack for the race detector.
	if limit := 5*60*time.Millisecond + 500*time.Millisecond; took > limit {
		t.Errorf("%d texts spaced 60 ms apart took %v to go out, want under %v", texts, took.Round(time.Millisecond), limit)
	}
	if n := len(b.radio.Received()); n != texts {
		t.Errorf("radio received %d, want %d", n, texts)
	}
}

// Two different room messages whose request ids collide are two requests,
// and each gets an outcome. The XMPP gateway derives a request's id from a
// 32-bit hash of the room message's key, so among m messages the chance of a
// collision is about m²/2³²; the radio link's spool recognises a
// retransmission by the request's content too, not by (origin, id) alone.
func TestRequestIDCollision(t *testing.T) {
	// Two room messages whose first chunks get the same id, found by a
	// birthday search over keys of this form.
	const (
		keyA = "xmpp:village@conference.example.org:msg-027246"
		keyB = "xmpp:village@conference.example.org:msg-183248"
	)
	requestID := func(key string) uint32 { // as xmppgw derives it
		h := fnv.New32a()
		h.Write([]byte(key + "#0"))
		return h.Sum32() | 1
	}
	id := requestID(keyA)
	if requestID(keyB) != id {
		t.Fatalf("ids %#x and %#x do not collide", id, requestID(keyB))
	}
	store, err := spool.Open(filepath.Join(t.TempDir(), "spool.db"), spool.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	b := newBench(t, nil)
	b.start(func(c *serialgw.Config) { c.Spool = store })
	res := b.results()

	b.send(id, "ana: is the pump fixed?")
	res.waitAll(t, []uint32{id})
	b.send(id, "kofi: bridge is open, river is low") // another message, days later
	b.send(0x77, "ana: thanks")                      // the results come in order: this one's comes last
	res.waitAll(t, []uint32{0x77})
	if got := res.of(id); len(got) != 2 {
		t.Errorf("results for the two messages with id %#x: %v, want one each", id, got)
	}
	want := []string{"ana: is the pump fixed?", "kofi: bridge is open, river is low", "ana: thanks"}
	if got := payloads(b.radio); !slices.Equal(got, want) {
		t.Errorf("radio sent %q, want %q", got, want)
	}
}

// A room floods the mesh: 30 requests in about 2 s on EU_868, where the
// region's duty cycle binds. The radio never has to refuse a packet (no
// RATE_LIMIT_EXCEEDED, no DUTY_CYCLE_LIMIT NAK): the bridge holds what its
// airtime budget does not allow, and refuses, with a result, what no longer
// fits its queue. The control case without the budget shows the radio does
// refuse the same flood.
func TestFloodFromRoom(t *testing.T) {
	const (
		requests   = 30
		spacing    = 75 * time.Millisecond // 30 requests in 2.2 s
		window     = 8 * time.Second       // the duty-cycle window, an hour on the air; long enough that a loaded machine still floods inside half of it
		queueLimit = 5
	)
	preset := meshpb.Config_LoRaConfig_SHORT_FAST
	text := func(i int) string { return fmt.Sprintf("alice: flood %02d", i) }
	params, err := mesh.LoRaParamsOf(&meshpb.Config_LoRaConfig{UsePreset: true, ModemPreset: preset, Region: meshpb.Config_LoRaConfig_EU_868})
	if err != nil {
		t.Fatal(err)
	}
	cost := mesh.TextAirtime(params, len(text(0)))
	duty := mesh.DutyCycle(meshpb.Config_LoRaConfig_EU_868)
	// How many texts of this cost fit a window's allowance.
	fits := func(share float64) int { return int(time.Duration(float64(window)*duty*share) / cost) }

	flood := func(t *testing.T, share float64) (*bench, *results, []uint32) {
		b := newBench(t, func(c *meshsim.Config) {
			c.Region, c.Preset, c.DutyWindow = meshpb.Config_LoRaConfig_EU_868, preset, window
		})
		b.start(func(c *serialgw.Config) {
			c.AirtimeWindow, c.AirtimeShare, c.QueueLimit = window, share, queueLimit
		})
		res := b.results()
		var ids []uint32
		tick := time.NewTicker(spacing)
		defer tick.Stop()
		start := time.Now()
		for i := range requests {
			if i > 0 {
				<-tick.C // the room's pace, not a wait for an outcome
			}
			ids = append(ids, uint32(0x9000+i))
			b.send(ids[i], text(i))
		}
		if d := time.Since(start); d >= window/2 {
			t.Fatalf("the flood took %v, not well inside the %v window: the counts below would not hold", d, window)
		}
		res.waitAll(t, ids)
		return b, res, ids
	}

	t.Run("paced", func(t *testing.T) {
		b, res, ids := flood(t, 0.5)
		received := payloads(b.radio)
		var delivered, refused int
		reasons := map[meshpb.Routing_Error]int{}
		for i, id := range ids {
			got := res.of(id)
			switch {
			case len(got) != 1:
				t.Errorf("request %d: results %v, want exactly one", i, got)
			case got[0] == meshpb.Routing_NONE:
				delivered++
				if !slices.Contains(received, text(i)) {
					t.Errorf("request %d reported sent, but the radio does not have %q", i, text(i))
				}
			default:
				refused++
				reasons[got[0]]++
				if slices.Contains(received, text(i)) {
					t.Errorf("request %d reported refused (%v), but the radio has it", i, got[0])
				}
			}
		}
		t.Logf("delivered %d, refused %d %v; airtime %v a text, budget %d texts per %v", delivered, refused, reasons, cost, fits(0.5), window)
		if delivered+refused != requests {
			t.Errorf("delivered %d + refused %d != %d requests", delivered, refused, requests)
		}
		// The airtime bucket lets at least one text out during the flood and
		// the budget at most fits(0.5), the queue holds queueLimit more for
		// later, and the rest is refused.
		if delivered != len(received) || delivered < 1+queueLimit || delivered > fits(0.5)+queueLimit {
			t.Errorf("delivered %d, radio received %d; want from %d to %d (1 to %d within the airtime, %d queued)",
				delivered, len(received), 1+queueLimit, fits(0.5)+queueLimit, fits(0.5), queueLimit)
		}
		for reason, n := range reasons {
			if reason != meshpb.Routing_RATE_LIMIT_EXCEEDED {
				t.Errorf("%d refusals as %v; a full queue is RATE_LIMIT_EXCEEDED", n, reason)
			}
		}
		if n := b.radio.RateLimited(); n != 0 {
			t.Errorf("radio refused %d texts with RATE_LIMIT_EXCEEDED", n)
		}
		if n := b.radio.DutyLimited(); n != 0 {
			t.Errorf("radio refused %d packets with DUTY_CYCLE_LIMIT", n)
		}
	})

	t.Run("control without a budget", func(t *testing.T) {
		b, res, ids := flood(t, 1000) // a share far above the region's limit
		// The radio takes what its own duty cycle allows and refuses the rest.
		testutil.Eventually(t, wait, func() bool { return len(b.radio.Received())+b.radio.DutyLimited() == requests },
			"radio received %d and refused %d", len(b.radio.Received()), b.radio.DutyLimited())
		if got, want := len(b.radio.Received()), fits(1); got != want {
			t.Errorf("radio received %d, want %d (its own duty cycle)", got, want)
		}
		if got, want := b.radio.DutyLimited(), requests-fits(1); got != want {
			t.Errorf("radio refused %d packets for its duty cycle, want %d: without it this test proves nothing", got, want)
		}
		// Each NAK reaches its requester: first accepted by the radio's
		// queue (NONE), then refused.
		naks := func() int {
			n := 0
			for _, id := range ids {
				if slices.Equal(res.of(id), []meshpb.Routing_Error{meshpb.Routing_NONE, meshpb.Routing_DUTY_CYCLE_LIMIT}) {
					n++
				}
			}
			return n
		}
		testutil.Eventually(t, wait, func() bool { return naks() == b.radio.DutyLimited() },
			"%d requests reported refused for the duty cycle, for %d NAKs", naks(), b.radio.DutyLimited())
		if n := b.radio.RateLimited(); n != 0 {
			t.Errorf("radio refused %d texts with RATE_LIMIT_EXCEEDED", n)
		}
	})
}

// The same packet heard through two relays, then replayed by the radio
// after a fresh handshake, is published once on the bridge topic and once as
// JSON; with a spool, also when the bridge restarts in between. Without a
// spool a restart forgets (the control case), so the spool is what holds.
func TestSamePacketTwiceAndReplayed(t *testing.T) {
	// relays injects pkt as two relays repeat it: the same sender and id,
	// one hop further and heard at another strength.
	relays := func(b *bench, pkt *meshpb.MeshPacket) {
		b.inject(pkt)
		again := proto.CloneOf(pkt)
		again.HopLimit--
		again.RxSnr, again.RxRssi = -3.25, proto.Int32(-118)
		b.inject(again)
	}
	expect := func(t *testing.T, u *uplink, pkt *meshpb.MeshPacket, want int) {
		t.Helper()
		if rx, js := u.counts(pkt); rx != want || js != want {
			t.Errorf("packet published %d times on %s and %d times as JSON, want %d and %d", rx, topics.MeshRX, js, want, want)
		}
	}

	t.Run("replayed after a handshake", func(t *testing.T) {
		b := newBench(t, nil)
		gw := b.start(nil)
		u := b.uplink()
		pkt := b.radio.TextPacket(0xa1b2c3d4, "Water pump is running again")
		relays(b, pkt)
		b.flush(u, "marker 1")
		expect(t, u, pkt, 1)

		b.usb.replug()
		b.waitHandshake(2)
		b.inject(pkt)
		b.flush(u, "marker 2")
		expect(t, u, pkt, 1)
		if n := gw.Stats.Duplicates.Load(); n != 2 {
			t.Errorf("duplicates = %d, want 2", n)
		}
		if n := gw.Stats.PacketsPublished.Load(); n != 3 {
			t.Errorf("packets published = %d, want 3 (the packet and two markers)", n)
		}
	})

	restart := func(t *testing.T, store serialgw.Spool) (*bench, *uplink, *meshpb.MeshPacket, *gateway) {
		b := newBench(t, nil)
		tune := func(c *serialgw.Config) { c.Spool = store }
		gw := b.start(tune)
		u := b.uplink()
		pkt := b.radio.TextPacket(0xa1b2c3d4, "Anyone heading to the market?")
		relays(b, pkt)
		b.flush(u, "marker 1")
		expect(t, u, pkt, 1)
		b.usb.replug()
		b.waitHandshake(2)
		b.inject(pkt)
		b.flush(u, "marker 2")
		expect(t, u, pkt, 1)

		gw.stop()
		gw = b.start(tune) // a new process, as far as the radio link knows
		b.inject(pkt)
		b.flush(u, "marker 3")
		return b, u, pkt, gw
	}

	t.Run("replayed after a restart, with a spool", func(t *testing.T) {
		store, err := spool.Open(filepath.Join(t.TempDir(), "spool.db"), spool.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { store.Close() })
		_, u, pkt, gw := restart(t, store)
		expect(t, u, pkt, 1)
		if n := gw.Stats.Duplicates.Load(); n != 1 {
			t.Errorf("duplicates after the restart = %d, want 1", n)
		}
	})

	t.Run("control: a restart without a spool forgets", func(t *testing.T) {
		_, u, pkt, _ := restart(t, nil)
		expect(t, u, pkt, 2)
	})
}

// The spool sits on a full disk: each request is refused with a result
// (never lost silently), the radio link keeps running (heartbeats and a
// fresh handshake work, heard packets are still published), and once there
// is space again new requests are delivered, including a request refused
// before.
func TestSpoolDiskFull(t *testing.T) {
	dir := testutil.MountTmpfs(t, "512k")
	store, err := spool.Open(filepath.Join(dir, "spool.db"), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })

	b := newBench(t, nil)
	gw := b.start(func(c *serialgw.Config) {
		c.Spool = store
		c.HeartbeatInterval, c.ReplyTimeout = 200*time.Millisecond, time.Second
	})
	res := b.results()
	u := b.uplink()

	// With space, a request goes through the spool to the radio.
	b.send(0x100, "carol: before the disk filled up")
	res.waitAll(t, []uint32{0x100})
	if got := res.of(0x100); !slices.Equal(got, []meshpb.Routing_Error{meshpb.Routing_NONE}) {
		t.Fatalf("request before the disk filled up: results %v", got)
	}

	// Take all the space that is left.
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 16<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	f.Close()

	const full = 5
	var refusedIDs []uint32
	for i := range full {
		id := uint32(0x200 + i)
		refusedIDs = append(refusedIDs, id)
		b.send(id, fmt.Sprintf("carol: disk full %d", i))
	}
	res.waitAll(t, refusedIDs)
	for _, id := range refusedIDs {
		got := res.of(id)
		if len(got) != 1 || got[0] != meshpb.Routing_NO_INTERFACE {
			t.Errorf("request %#x on a full disk: results %v, want one NO_INTERFACE refusal (the bridge cannot keep it)", id, got)
		}
	}
	if n := len(b.radio.Received()); n != 1 {
		t.Errorf("radio received %d packets, want only the one from before the disk filled up", n)
	}
	if n := gw.QueueLen(); n != 0 {
		t.Errorf("%d requests queued on a full disk", n)
	}

	// The link lives on: heartbeats are answered (each brings a
	// QueueStatus frame), a fresh handshake works, and a heard packet is
	// still published (its record in the spool fails, and is logged).
	frames := gw.Stats.FramesIn.Load()
	testutil.Eventually(t, wait, func() bool { return gw.Stats.FramesIn.Load() >= frames+2 }, "no heartbeat answered on a full disk")
	b.usb.replug()
	b.waitHandshake(2)
	testutil.Eventually(t, wait, gw.Up, "radio link not up after a handshake on a full disk")
	b.flush(u, "heard while the disk is full")
	if n := gw.Stats.Reconnects.Load(); n != 1 {
		t.Errorf("reconnects = %d, want 1 (the replug)", n)
	}

	// Space again: new requests are delivered, and so is a request that was
	// refused for lack of space and asked again.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	after := []uint32{0x300, 0x301, refusedIDs[0]}
	b.send(after[0], "carol: space again 0")
	b.send(after[1], "carol: space again 1")
	b.send(after[2], "carol: disk full 0")
	testutil.Eventually(t, wait, func() bool {
		for _, id := range after {
			if !slices.Contains(res.of(id), meshpb.Routing_NONE) {
				return false
			}
		}
		return true
	}, "requests after the space returned: %v %v %v", res.of(after[0]), res.of(after[1]), res.of(after[2]))
	want := []string{"carol: before the disk filled up", "carol: space again 0", "carol: space again 1", "carol: disk full 0"}
	if got := payloads(b.radio); !slices.Equal(got, want) {
		t.Errorf("radio received %q, want %q", got, want)
	}
	if n, _, _, err := store.Stats("radio-tx"); err != nil || n != 0 {
		t.Errorf("spool holds %d requests (%v) after all were sent", n, err)
	}
}
