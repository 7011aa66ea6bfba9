package serialgw_test

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/internal/meshsim"
	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/serialgw"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// sendData asks the radio link to send a packet that is not a text, as a
// local tool may on sovereign/mesh/tx.
func (r *rig) sendData(t *testing.T, id uint32, port meshpb.PortNum, payload []byte) {
	t.Helper()
	b, _ := proto.Marshal(&meshpb.ServiceEnvelope{
		GatewayId: "test",
		Packet: &meshpb.MeshPacket{Id: id, To: mesh.Broadcast, PayloadVariant: &meshpb.MeshPacket_Decoded{Decoded: &meshpb.Data{
			Portnum: port, Payload: payload,
		}}},
	})
	if err := r.broker.Publish(topics.MeshTX, b, false); err != nil {
		t.Fatal(err)
	}
}

// statusRecords collects the status records of every radio side published
// from now on.
type statusRecords struct {
	mu   sync.Mutex
	recs []map[string]any
}

func (r *rig) statuses(t *testing.T) *statusRecords {
	st := &statusRecords{}
	unsub, err := r.broker.Subscribe(topics.StatusFilter, func(_ string, b []byte) {
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Errorf("status record %q: %v", b, err)
			return
		}
		st.mu.Lock()
		st.recs = append(st.recs, m)
		st.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unsub)
	return st
}

// airtime lists the airtime_blocked value of each record, "-" where it is
// left out.
func (st *statusRecords) airtime() []string {
	st.mu.Lock()
	defer st.mu.Unlock()
	var out []string
	for _, m := range st.recs {
		if b, ok := m["airtime_blocked"]; ok {
			out = append(out, map[bool]string{true: "blocked", false: "false"}[b == true])
		} else {
			out = append(out, "-")
		}
	}
	return out
}

// A flood of large packets that are not texts (so no text spacing holds
// them) gets a burst of the airtime share and then waits: most of the
// hour's share stays unused and the rest of the flood stays queued, instead
// of the whole share going in seconds and everything else, room chat
// included, waiting out the hour. A few texts before it go out as usual,
// held by nothing but their spacing. The hold is reported.
func TestAirtimeFloodGetsABurst(t *testing.T) {
	r := startRig(t, tcpTransport, nil)
	st := r.statuses(t)
	res := r.results(t)
	for i := uint32(1); i <= 3; i++ {
		r.send(t, i, "", strings.Repeat("x", 180))
	}
	for i := uint32(1); i <= 3; i++ {
		res.wait(t, i, meshpb.Routing_NONE)
	}
	if blocked, _ := r.gw.AirtimeBlocked(); blocked || strings.Contains(strings.Join(st.airtime(), ","), "blocked") {
		t.Fatalf("three texts were held for airtime: status records %v", st.airtime())
	}

	const flood = 95
	for i := uint32(100); i < 100+flood; i++ {
		r.sendData(t, i, meshpb.PortNum_PRIVATE_APP, make([]byte, 233))
	}
	testutil.Eventually(t, wait, func() bool { b, _ := r.gw.AirtimeBlocked(); return b }, "the flood was never held for airtime")
	// Requests are taken in off the publisher's goroutine: the hold may
	// come before the whole flood is queued.
	testutil.Eventually(t, wait, func() bool { return r.gw.QueueLen()+len(r.radio.Received())-3 == flood },
		"the flood was never all taken in: %d queued", r.gw.QueueLen())
	used, allowance := r.gw.Airtime()
	if used > allowance*15/100 {
		t.Errorf("the flood used %v of the window's %v at once; want about a tenth (the burst)", used, allowance)
	}
	sent := len(r.radio.Received()) - 3
	if queued := r.gw.QueueLen(); queued+sent != flood || queued < flood*8/10 {
		t.Errorf("%d of the flood sent and %d queued; want most of %d queued", sent, queued, flood)
	}
	if _, w := r.gw.AirtimeBlocked(); w < 10*time.Second {
		t.Errorf("the next packet of the flood waits %v; want the bucket's refill time (tens of seconds)", w)
	}
	testutil.Eventually(t, wait, func() bool { a := st.airtime(); return len(a) > 0 && a[len(a)-1] == "blocked" }, "status records %v", st.airtime())
	if n := r.radio.DutyLimited(); n != 0 {
		t.Errorf("the radio refused %d packets for its duty cycle", n)
	}
}

// Held for airtime, and released: the status record says so once each way
// while a flood trickles out (not once per packet), and the gateway
// reports it for the metrics and health. Windows are seconds instead of an
// hour to keep the test short; the rule is the same.
func TestAirtimeBlockedReported(t *testing.T) {
	r := startRig(t, tcpTransport, func(c *serialgw.Config) {
		c.AirtimeWindow = 3 * time.Second
	}, func(c *meshsim.Config) {
		c.Preset, c.DutyWindow = meshpb.Config_LoRaConfig_SHORT_TURBO, 3*time.Second
	})
	st := r.statuses(t)
	res := r.results(t)
	for i := uint32(1); i <= 4; i++ {
		r.sendData(t, i, meshpb.PortNum_PRIVATE_APP, make([]byte, 233))
	}
	testutil.Eventually(t, wait, func() bool { b, _ := r.gw.AirtimeBlocked(); return b }, "never held for airtime")
	for i := uint32(1); i <= 4; i++ {
		res.wait(t, i, meshpb.Routing_NONE)
	}
	testutil.Eventually(t, wait, func() bool { b, _ := r.gw.AirtimeBlocked(); return !b }, "still reported blocked with nothing queued")
	testutil.Eventually(t, wait, func() bool { return len(st.airtime()) >= 2 }, "status records %v", st.airtime())
	// The first record is the retained one from the handshake.
	if got := strings.Join(st.airtime(), ","); got != "-,blocked,-" {
		t.Errorf("airtime in the status records: %s; want -,blocked,- (one blocked period)", got)
	}
	st.mu.Lock()
	for _, m := range st.recs {
		if m["state"] != string(topics.LinkOnline) {
			t.Errorf("status record %v: the radio's state changed", m)
		}
	}
	if since, _ := st.recs[1]["airtime_blocked_since"].(string); since == "" {
		t.Errorf("blocked record without its start: %v", st.recs[1])
	}
	st.mu.Unlock()
	if n := r.radio.DutyLimited(); n != 0 {
		t.Errorf("the radio refused %d packets for its duty cycle", n)
	}
}
