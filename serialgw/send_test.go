package serialgw_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

// results collects what the radio link reports on topics.MeshResult, by request id.
type results struct {
	mu  sync.Mutex
	got map[uint32][]meshpb.Routing_Error
}

func (r *rig) results(t *testing.T) *results {
	res := &results{got: map[uint32][]meshpb.Routing_Error{}}
	unsub, err := r.broker.Subscribe(topics.MeshResult, func(_ string, b []byte) {
		rt, err := topics.ParseResult(b)
		if err != nil {
			t.Errorf("undecodable result: %v", err)
			return
		}
		if rt.Origin != "test" {
			t.Errorf("result for origin %q", rt.Origin)
		}
		res.mu.Lock()
		res.got[rt.RequestID] = append(res.got[rt.RequestID], rt.Reason)
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
	return append([]meshpb.Routing_Error(nil), res.got[id]...)
}

func (res *results) wait(t *testing.T, id uint32, want ...meshpb.Routing_Error) {
	t.Helper()
	testutil.Eventually(t, wait, func() bool { return len(res.of(id)) >= len(want) }, "request %d: results %v, want %v", id, res.of(id), want)
	got := res.of(id)
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("request %d: results %v, want %v", id, got, want)
		}
	}
}

// send asks every radio side to send a text, on topics.MeshTX.
func (r *rig) send(t *testing.T, id uint32, channel, text string) {
	t.Helper()
	r.sendOn(t, topics.MeshTX, id, channel, text)
}

// sendOn asks for a text on a send topic, as the XMPP gateway does.
func (r *rig) sendOn(t *testing.T, topic string, id uint32, channel, text string) {
	t.Helper()
	b, _ := proto.Marshal(&meshpb.ServiceEnvelope{
		GatewayId: "test", ChannelId: channel,
		Packet: &meshpb.MeshPacket{Id: id, To: mesh.Broadcast, PayloadVariant: &meshpb.MeshPacket_Decoded{Decoded: &meshpb.Data{
			Portnum: meshpb.PortNum_TEXT_MESSAGE_APP, Payload: []byte(text),
		}}},
	})
	if err := r.broker.Publish(topic, b, false); err != nil {
		t.Fatal(err)
	}
}

// Each request gets its outcome: accepted by the radio, or refused with a reason.
func TestSendResults(t *testing.T) {
	r := startRig(t, tcpTransport, nil)
	res := r.results(t)
	r.send(t, 1, "LongFast", "hello mesh")
	r.send(t, 2, "", strings.Repeat("é", 101)) // 202 bytes
	r.send(t, 3, "nonexistent", "where")
	res.wait(t, 1, meshpb.Routing_NONE)
	res.wait(t, 2, meshpb.Routing_TOO_LARGE)
	res.wait(t, 3, meshpb.Routing_NO_CHANNEL)
	if got := r.radio.Received(); len(got) != 1 || string(got[0].GetDecoded().GetPayload()) != "hello mesh" || got[0].GetId() == 1 {
		t.Errorf("radio received %v (ids must be the link's own, not the request's)", got)
	}
}

// Texts queued faster than the firmware allows are spaced so the radio
// drops none; every one is confirmed.
func TestTextPacing(t *testing.T) {
	r := startRig(t, tcpTransport, nil)
	res := r.results(t)
	for i := uint32(1); i <= 3; i++ {
		r.send(t, i, "", "burst "+string(rune('0'+i)))
	}
	for i := uint32(1); i <= 3; i++ {
		res.wait(t, i, meshpb.Routing_NONE)
	}
	if n := r.radio.RateLimited(); n != 0 {
		t.Errorf("radio rate-limited %d texts", n)
	}
	var order []string
	for _, p := range r.radio.Received() {
		order = append(order, string(p.GetDecoded().GetPayload()))
	}
	if strings.Join(order, ",") != "burst 1,burst 2,burst 3" {
		t.Errorf("order = %v", order)
	}
}

// When the firmware does refuse a text (here: pacing set below its 2 s
// rule), the NAK reaches the requester against the right request.
func TestRateLimitNAKSurfaced(t *testing.T) {
	r := startRig(t, tcpTransport, func(c *serialgw.Config) { c.TextInterval = time.Millisecond })
	res := r.results(t)
	r.send(t, 1, "", "first")
	r.send(t, 2, "", "second, too soon")
	res.wait(t, 1, meshpb.Routing_NONE)
	res.wait(t, 2, meshpb.Routing_NONE, meshpb.Routing_RATE_LIMIT_EXCEEDED)
	if r.radio.RateLimited() != 1 {
		t.Errorf("rate limited %d", r.radio.RateLimited())
	}
}

// Firmware without flow control never confirms a packet: after the first
// unconfirmed send the link stops waiting, and nothing is reported lost.
func TestNoFlowControlFirmware(t *testing.T) {
	r := startRig(t, tcpTransport, func(c *serialgw.Config) { c.SendTimeout = 300 * time.Millisecond },
		func(c *meshsim.Config) { c.NoQueueStatus = true })
	res := r.results(t)
	r.send(t, 1, "", "one")
	r.send(t, 2, "", "two")
	res.wait(t, 1, meshpb.Routing_NONE)
	res.wait(t, 2, meshpb.Routing_NONE)
	// Nothing confirms the write, so the result may come before the radio reads it.
	testutil.Eventually(t, wait, func() bool { return len(r.radio.Received()) == 2 }, "radio received %d", len(r.radio.Received()))
}

// A handshake the radio does not answer is asked again.
func TestHandshakeRetried(t *testing.T) {
	r := startRig(t, tcpTransport, func(c *serialgw.Config) { c.HandshakeTimeout = 500 * time.Millisecond })
	r.radio.IgnoreConfigRequests(1)
	r.replug()
	testutil.Eventually(t, wait, func() bool { return r.radio.Handshakes() == 2 && r.radio.Ready() }, "handshakes %d", r.radio.Handshakes())
	if n := r.gw.Stats.Handshakes.Load(); n != 3 {
		t.Errorf("handshake attempts = %d, want 3 (first, ignored, retried)", n)
	}
}

// A radio that falls silent (API timeout, missed reboot) is noticed by its
// unanswered heartbeats and handshaken again on the same connection.
func TestSilentRadio(t *testing.T) {
	r := startRig(t, ptyTransport, nil)
	r.radio.Mute()
	testutil.Eventually(t, wait, func() bool { return r.radio.Handshakes() == 2 && r.radio.Ready() }, "handshakes %d", r.radio.Handshakes())
	if n := r.gw.Stats.Reconnects.Load(); n != 0 {
		t.Errorf("reconnects = %d, want a re-handshake on the same port", n)
	}
}

// Node records are published retained, with names from the radio's node DB.
func TestNodeRecords(t *testing.T) {
	r := startRig(t, tcpTransport, nil)
	names := map[string]string{}
	var mu sync.Mutex
	unsub, _ := r.broker.Subscribe(topics.NodesFilter, func(topic string, b []byte) {
		id, _ := topics.NodeID(topic)
		mu.Lock()
		names[id] = string(b)
		mu.Unlock()
	})
	defer unsub()
	// The radio answers the handshake before the gateway has published what
	// it learnt from it: wait for the records rather than read them at once.
	want := map[string]string{"!5eed0001": "SovereignRelay Sim", "!a1b2c3d4": "Ana's T-Beam", "!13572468": "Kofi"}
	testutil.Eventually(t, wait, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for id, name := range want {
			if !strings.Contains(names[id], `"long_name":"`+name+`"`) {
				return false
			}
		}
		return true
	}, "node records of %v never all published", want)
}

// Bridged traffic is paced by airtime within its share of the region's duty
// cycle, so the radio never refuses a packet for it: a burst from the room
// waits instead. Without the budget (the control case) the same burst runs
// into the radio's duty-cycle stop. Windows are seconds instead of an hour
// to keep the test short; the rule is the same.
func TestAirtimeBudget(t *testing.T) {
	burst := func(t *testing.T, share float64) (*rig, *results) {
		r := startRig(t, tcpTransport, func(c *serialgw.Config) {
			c.TextInterval, c.AirtimeWindow, c.AirtimeShare = 50*time.Millisecond, 3*time.Second, share
		}, func(c *meshsim.Config) {
			c.Preset, c.TextRule, c.DutyWindow = meshpb.Config_LoRaConfig_SHORT_TURBO, 40*time.Millisecond, 3*time.Second
		})
		res := r.results(t)
		for i := uint32(1); i <= 10; i++ {
			r.send(t, i, "", strings.Repeat("x", 80))
		}
		for i := uint32(1); i <= 10; i++ {
			testutil.Eventually(t, wait, func() bool { return len(res.of(i)) >= 1 }, "request %d: no result", i)
		}
		return r, res
	}
	t.Run("paced", func(t *testing.T) {
		r, res := burst(t, 0.5)
		for i := uint32(1); i <= 10; i++ {
			if got := res.of(i); got[0] != meshpb.Routing_NONE {
				t.Errorf("request %d: %v", i, got)
			}
		}
		if n := r.radio.DutyLimited(); n != 0 {
			t.Errorf("radio refused %d packets for its duty cycle", n)
		}
		if n := len(r.radio.Received()); n != 10 {
			t.Errorf("radio received %d of 10", n)
		}
	})
	t.Run("control without a budget", func(t *testing.T) {
		r, _ := burst(t, 1000) // a share far above the region's limit
		testutil.Eventually(t, wait, func() bool { return r.radio.DutyLimited() > 0 }, "the radio never hit its duty cycle: the test proves nothing")
	})
}

// What was accepted for the radio survives a restart of the bridge, and a
// packet heard before the restart is not published again after it.
func TestSpoolAcrossRestart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	simCfg := meshsim.Demo()
	simCfg.TrafficInterval = 0
	radio := meshsim.New(simCfg)
	dev, replug := tcpTransport.start(t, ctx, radio)
	b, err := broker.NewEmbedded(broker.Config{Listen: broker.Off}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	b.Start()
	defer b.Close()
	store, err := spool.Open(filepath.Join(t.TempDir(), "spool.db"), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var published atomic.Int32
	unsub, _ := b.Subscribe(topics.MeshRX, func(string, []byte) { published.Add(1) })
	defer unsub()

	var gw *serialgw.Gateway
	run := func() (stop func()) {
		var err error
		gw, err = serialgw.New(serialgw.Config{Device: dev, StateDir: t.TempDir(), Spool: store, TextInterval: 2100 * time.Millisecond,
			HandshakeTimeout: time.Hour, BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond}, b, testLog(t))
		if err != nil {
			t.Fatal(err)
		}
		gctx, gcancel := context.WithCancel(ctx)
		done := make(chan struct{})
		g := gw
		go func() { g.Run(gctx); close(done) }()
		return func() { gcancel(); <-done }
	}
	r := &rig{radio: radio, broker: b}

	stop := run()
	testutil.Eventually(t, wait, radio.Ready, "no handshake")
	heard := radio.TextPacket(0xa1b2c3d4, "heard once")
	radio.Inject(heard)
	testutil.Eventually(t, wait, func() bool { return published.Load() == 1 }, "not published")
	// The radio stops answering handshakes; requests pile up, unsent.
	radio.IgnoreConfigRequests(1 << 30)
	replug()
	testutil.Eventually(t, wait, func() bool { return !radio.Ready() }, "radio still ready")
	for i := uint32(1); i <= 3; i++ {
		r.send(t, i, "", fmt.Sprintf("queued %d", i))
	}
	stop() // the bridge goes down with three packets waiting

	// Started again while the radio still does not answer: a JSON downlink
	// cannot be parsed before the handshake, and is kept as it came.
	stop = run()
	testutil.Eventually(t, wait, func() bool { return gw.Stats.Handshakes.Load() >= 1 }, "the bridge never asked the radio")
	if err := b.Publish("msh/EU_868/2/json/mqtt/", []byte(`{"type":"sendtext","payload":"queued 4"}`), false); err != nil {
		t.Fatal(err)
	}
	// Requests are taken in off the publisher's goroutine.
	testutil.Eventually(t, wait, func() bool { return gw.QueueLen() == 4 }, "%d packets queued, want 4", gw.QueueLen())
	stop()

	radio.IgnoreConfigRequests(0)
	stop = run()
	defer stop()
	testutil.Eventually(t, wait, func() bool { return len(radio.Received()) == 4 }, "radio got %d", len(radio.Received()))
	for i, p := range radio.Received() {
		if want := fmt.Sprintf("queued %d", i+1); string(p.GetDecoded().GetPayload()) != want {
			t.Errorf("packet %d = %q, want %q", i, p.GetDecoded().GetPayload(), want)
		}
	}
	radio.Inject(heard) // replayed after the handshake
	radio.Inject(radio.TextPacket(0xa1b2c3d4, "new"))
	testutil.Eventually(t, wait, func() bool { return published.Load() >= 2 }, "new packet not published")
	if n := published.Load(); n != 2 {
		t.Errorf("published %d packets, want 2 (the replay is not new)", n)
	}
	if n, _, _, _ := store.Stats("radio-tx"); n != 0 {
		t.Errorf("%d packets left in the spool after sending", n)
	}

	// A requester that stopped before its result came asks again: the
	// packet is not sent twice, and the request gets a result.
	res := r.results(t)
	r.send(t, 1, "", "queued 1")
	res.wait(t, 1, meshpb.Routing_NONE)
	if n := len(radio.Received()); n != 4 {
		t.Errorf("radio got %d packets after a request was repeated, want 4", n)
	}
}
