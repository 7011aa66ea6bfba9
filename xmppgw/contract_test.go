package xmppgw

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"net"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"mellium.im/xmpp/jid"

	"github.com/jshiffer/lora-xmpp-bridge/broker"
	"github.com/jshiffer/lora-xmpp-bridge/internal/meshsim"
	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/serialgw"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// What this gateway keeps of the radio link's records is the contract's
// own types: this does not compile if it declares its own.
var _ = func(g *Gateway, s *radioSide) (map[string]topics.NodeRecord, topics.RadioRecord, topics.StatusRecord) {
	return g.nodes, s.record, s.status
}

// strictly decodes a JSON record as T, refusing fields T does not have,
// and checks that T encodes it back byte for byte: what the radio link
// publishes and what this gateway reads are the same type.
func strictly[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Errorf("%s does not decode as %T: %v", b, v, err)
	}
	if again, err := json.Marshal(v); err != nil || !bytes.Equal(again, b) {
		t.Errorf("%s does not round-trip through %T: %s (%v)", b, v, again, err)
	}
	return v
}

// The radio link publishes node, radio and status records and results
// through the embedded broker, from a simulated radio; this gateway reads
// them, and its send requests reach the radio. Every record decodes
// strictly as the contract's type, round-trips byte for byte, and holds
// what the radio said; every link state and the airtime fields occur.
func TestContractWithTheRadioLink(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	b, err := broker.NewEmbedded(broker.Config{Listen: broker.Off}, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	var mu sync.Mutex
	seen := map[string][][]byte{}
	for _, f := range []string{topics.NodesFilter, topics.RadioFilter, topics.StatusFilter, topics.MeshResult} {
		unsub, err := b.Subscribe(f, func(_ string, p []byte) {
			mu.Lock()
			seen[f] = append(seen[f], bytes.Clone(p))
			mu.Unlock()
		})
		if err != nil {
			t.Fatal(err)
		}
		defer unsub()
	}
	published := func(f string) [][]byte {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen[f])
	}

	// This gateway with no XMPP server to reach: its broker side runs alone.
	cfg := testConfig()
	cfg.Server = "127.0.0.1:1"
	cfg.Rooms = append(cfg.Rooms, Room{JID: jid.MustParse("nowhere@conference.example.org"), Nick: "meshbridge", Channel: "nosuch"})
	g, err := New(cfg, b, log)
	if err != nil {
		t.Fatal(err)
	}
	xmppDone := make(chan error, 1)
	go func() { xmppDone <- g.Run(ctx) }()
	defer func() { cancel(); <-xmppDone }()
	select {
	case <-g.Subscribed():
	case err := <-xmppDone:
		t.Fatalf("Run: %v", err)
	}

	// The radio link, on a simulated radio whose connection can be dropped;
	// a duty-cycle window of seconds, so that a few packets spend the share.
	simCfg := meshsim.Demo()
	simCfg.TrafficInterval, simCfg.Preset, simCfg.DutyWindow = 0, meshpb.Config_LoRaConfig_SHORT_TURBO, 3*time.Second
	radio := meshsim.New(simCfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conns := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
			go func() { _ = radio.Serve(ctx, c); c.Close() }()
		}
	}()
	dev := serialgw.Device{Kind: "tcp", Addr: ln.Addr().String()}
	link, err := serialgw.New(serialgw.Config{Device: dev, StateDir: t.TempDir(), AirtimeWindow: 3 * time.Second,
		HandshakeTimeout: 300 * time.Millisecond, BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond}, b, log)
	if err != nil {
		t.Fatal(err)
	}
	linkCtx, cancelLink := context.WithCancel(ctx)
	linkDone := make(chan error, 1)
	go func() { linkDone <- link.Run(linkCtx) }()
	stopLink := sync.OnceValue(func() error { cancelLink(); return <-linkDone })
	defer stopLink()

	self := mesh.NodeID(simCfg.NodeNum)
	state := func() (st topics.StatusRecord, rec topics.RadioRecord, nodes map[string]topics.NodeRecord, blocked bool) {
		g.mu.Lock()
		defer g.mu.Unlock()
		if side := g.radios.byID[self]; side != nil {
			st, rec = side.status, side.record
		}
		return st, rec, maps.Clone(g.nodes), g.airBlocked
	}
	const wait = 20 * time.Second
	testutil.Eventually(t, wait, func() bool { s, r, _, _ := state(); return s.State == topics.LinkOnline && r.ID == self },
		"this gateway never saw the radio online")
	testutil.Eventually(t, wait, func() bool {
		_, _, nodes, _ := state()
		for _, p := range simCfg.Peers {
			if n := nodes[mesh.NodeID(p.Num)]; n.LongName != p.LongName || n.ShortName != p.ShortName {
				return false
			}
		}
		return true
	}, "this gateway never learnt the nodes' names")

	// Mesh -> room, named from the node record.
	radio.Inject(radio.TextPacket(simCfg.Peers[0].Num, "hello room"))
	select {
	case o := <-g.toRoom:
		if want := simCfg.Peers[0].LongName + ": hello room"; o.body != want {
			t.Errorf("mesh text for the room %q, want %q", o.body, want)
		}
	case <-time.After(wait):
		t.Fatal("the mesh text never reached this gateway")
	}

	// Room -> mesh: one request sent, one refused for a channel the radio
	// does not have, and the refusal collected for the room.
	g.toMesh(cfg.Rooms[0], "alice", "hello mesh", "k1")
	g.toMesh(cfg.Rooms[1], "bob", "lost", "k2")
	testutil.Eventually(t, wait, func() bool { return slices.ContainsFunc(radio.Received(), isText("alice: hello mesh")) },
		"the room's message never reached the radio")
	testutil.Eventually(t, wait, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		b := g.refused["nowhere@conference.example.org"]
		return b != nil && len(b.msgs) == 1 && b.msgs[0].reason == meshpb.Routing_NO_CHANNEL
	}, "the refusal never reached this gateway")

	// Airtime: held and released, seen by this gateway.
	for i := uint32(1); i <= 4; i++ {
		p, err := topics.SendRequest{Origin: "test", ID: i, To: mesh.Broadcast,
			Data: &meshpb.Data{Portnum: meshpb.PortNum_PRIVATE_APP, Payload: make([]byte, 233)}}.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Publish(topics.MeshTX, p, false); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, wait, func() bool { _, _, _, blocked := state(); return blocked }, "this gateway never saw airtime held")
	testutil.Eventually(t, wait, func() bool { _, _, _, blocked := state(); return !blocked }, "this gateway never saw airtime released")

	// The radio goes away and does not answer until it is back.
	radio.IgnoreConfigRequests(1 << 30)
	(<-conns).Close()
	testutil.Eventually(t, wait, func() bool { s, _, _, _ := state(); return s.State == topics.LinkDisconnected && s.Error != "" },
		"this gateway never saw the radio disconnected")
	radio.IgnoreConfigRequests(0)
	testutil.Eventually(t, wait, func() bool { s, _, _, _ := state(); return s.State == topics.LinkOnline }, "the radio never came back")
	if err := stopLink(); err != nil {
		t.Errorf("radio link Run: %v", err)
	}
	testutil.Eventually(t, wait, func() bool { s, _, _, _ := state(); return s.State == topics.LinkOffline },
		"this gateway never saw the radio link stop")

	// Every record as published, strictly.
	wantNodes := map[string]topics.NodeRecord{self: {ID: self, Num: simCfg.NodeNum, LongName: simCfg.LongName, ShortName: simCfg.ShortName, HWModel: "TBEAM", Role: "CLIENT"}}
	for _, p := range simCfg.Peers {
		wantNodes[mesh.NodeID(p.Num)] = topics.NodeRecord{ID: mesh.NodeID(p.Num), Num: p.Num, LongName: p.LongName, ShortName: p.ShortName, HWModel: "TBEAM", Role: "CLIENT"}
	}
	for _, p := range published(topics.NodesFilter) {
		n := strictly[topics.NodeRecord](t, p)
		if n.ID != self && n.LastHeard == 0 {
			t.Errorf("node record %s without last_heard", p)
		}
		n.LastHeard = 0
		if n != wantNodes[n.ID] {
			t.Errorf("node record %s, want %+v", p, wantNodes[n.ID])
		}
	}
	wantRadio := topics.RadioRecord{ID: self, Num: simCfg.NodeNum, LongName: simCfg.LongName, ShortName: simCfg.ShortName, Firmware: "2.7.26.sim",
		HWModel: "TBEAM", Region: "EU_868", Preset: "SHORT_TURBO", HopLimit: 3, Root: "msh/EU_868",
		Channels: []topics.ChannelRecord{{Index: 0, Name: "ShortTurbo", Role: "PRIMARY"}}}
	radios := published(topics.RadioFilter)
	if len(radios) < 2 {
		t.Errorf("%d radio records for two handshakes", len(radios))
	}
	for _, p := range radios {
		if r := strictly[topics.RadioRecord](t, p); !reflect.DeepEqual(r, wantRadio) {
			t.Errorf("radio record %s, want %+v", p, wantRadio)
		}
	}
	states := map[topics.LinkState]bool{}
	airtime := false
	for _, p := range published(topics.StatusFilter) {
		s := strictly[topics.StatusRecord](t, p)
		states[s.State] = true
		if _, err := time.Parse(time.RFC3339, s.Since); err != nil || s.Device != dev.String() || (s.State == topics.LinkDisconnected) != (s.Error != "") {
			t.Errorf("status record %s", p)
		}
		if s.Node != self {
			t.Errorf("status record %s without the radio's node", p)
		}
		if s.AirtimeBlocked {
			airtime = true
			if _, err := time.Parse(time.RFC3339, s.AirtimeBlockedSince); err != nil {
				t.Errorf("status record %s: %v", p, err)
			}
		} else if s.AirtimeBlockedSince != "" {
			t.Errorf("status record %s: a blocked period's start without the block", p)
		}
	}
	// A first start publishes no state before the radio has told its node
	// id, which names the topic: "connecting" shows from the next start.
	for _, s := range []topics.LinkState{topics.LinkOnline, topics.LinkDisconnected, topics.LinkOffline} {
		if !states[s] {
			t.Errorf("no status record in state %s", s)
		}
	}
	if !airtime {
		t.Error("no status record held for airtime")
	}
	results := map[string][]topics.Result{}
	for _, p := range published(topics.MeshResult) {
		r, err := topics.ParseResult(p)
		if err != nil {
			t.Errorf("result %x: %v", p, err)
			continue
		}
		again, _ := r.Marshal()
		var a, b meshpb.ServiceEnvelope
		if proto.Unmarshal(p, &a) != nil || proto.Unmarshal(again, &b) != nil || !proto.Equal(&a, &b) {
			t.Errorf("result %v does not round-trip through topics.Result: %v", &a, &b)
		}
		results[r.Origin] = append(results[r.Origin], r)
	}
	// A sent request's result names the packet it went as; a refused one none.
	var k1Packet uint32
	if i := slices.IndexFunc(radio.Received(), isText("alice: hello mesh")); i >= 0 {
		k1Packet = radio.Received()[i].GetId()
	}
	want := []topics.Result{
		{Origin: topics.OriginXMPP, RequestID: requestID("k1@"+self, 0), Reason: meshpb.Routing_NONE, Radio: simCfg.NodeNum, PacketID: k1Packet},
		{Origin: topics.OriginXMPP, RequestID: requestID("k2@"+self, 0), Reason: meshpb.Routing_NO_CHANNEL, Radio: simCfg.NodeNum},
	}
	for _, w := range want {
		if !slices.Contains(results[topics.OriginXMPP], w) {
			t.Errorf("no result %+v among %+v", w, results[topics.OriginXMPP])
		}
	}
	if n := len(results["test"]); n < 4 {
		t.Errorf("%d results for the 4 packets sent for airtime", n)
	}
}

func isText(s string) func(*meshpb.MeshPacket) bool {
	return func(p *meshpb.MeshPacket) bool { return string(p.GetDecoded().GetPayload()) == s }
}
