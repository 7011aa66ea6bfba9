//go:build integration

package serialgw_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/internal/meshsim"
	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/serialgw"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// The JSON downlink's results as a local tool sees them: mosquitto_pub
// sends, mosquitto_sub (logged in as that tool) reads topics.JSONResult.

// subResults reads the results through a real mosquitto_sub.
func (r *rig) subResults(t *testing.T) *downlinkResults {
	lines := r.sub(t, topics.JSONResult)
	return &downlinkResults{read: func() [][]byte {
		var out [][]byte
		for _, l := range lines.All() {
			if strings.HasPrefix(l, topics.JSONResult+" ") {
				out = append(out, hexPayload(t, l))
			}
		}
		return out
	}}
}

const downlinkTopic = "msh/EU_868/2/json/mqtt/"

// Every refusal is one result, "refused", with the client's id, the
// reason and a sentence; nothing reaches the radio, and the request after
// them is answered too (so no second result of theirs was on its way).
func TestDownlinkRefusedResults(t *testing.T) {
	r := startRig(t, tcpTransport, nil)
	res := r.subResults(t)
	cases := []struct {
		id, msg, reason, detail string
	}{
		{`"bad-json"`, `{"id":"bad-json","type":"sendtext","payload":`, "BAD_REQUEST", "malformed JSON"},
		{`"unknown-type"`, `{"id":"unknown-type","type":"reboot","payload":""}`, "BAD_REQUEST", `unknown "type"`},
		{`"foreign-from"`, `{"id":"foreign-from","from":1,"type":"sendtext","payload":"spoof"}`, "BAD_REQUEST", `"from" is 1`},
		{`4711`, `{"id":4711,"type":"sendtext","payload":"` + strings.Repeat("x", topics.MaxTextBytes+1) + `"}`, "TOO_LARGE", "201 bytes"},
		{`"own-uplink"`, `{"id":"own-uplink","sender":"!5eed0001","type":"sendtext","payload":"loop"}`, "BAD_REQUEST", "own id"},
		{`"empty-text"`, `{"id":"empty-text","type":"sendtext","payload":""}`, "BAD_REQUEST", "empty"},
		// An id that cannot come back: refused, without it.
		{``, `{"id":{"nested":true},"type":"sendtext","payload":"hi"}`, "BAD_REQUEST", `"id" is an object`},
	}
	for _, tc := range cases {
		r.pub(t, downlinkTopic, tc.msg)
	}
	r.pub(t, downlinkTopic, `{"id":"marker","type":"sendtext","payload":"marks the end"}`)
	res.wait(t, `"marker"`, topics.DownlinkQueued, topics.DownlinkSent)

	ids := map[uint32]bool{}
	for _, tc := range cases {
		t.Run(tc.reason+" "+tc.id, func(t *testing.T) {
			got := res.of(t, tc.id)
			if len(got) != 1 {
				t.Fatalf("results %s, want one", res.show(t, tc.id))
			}
			g := got[0]
			if g.Status != topics.DownlinkRefused || g.Reason != tc.reason || !strings.Contains(g.Detail, tc.detail) ||
				g.Gateway != "!5eed0001" || g.PacketID != 0 || g.RequestID == 0 || ids[g.RequestID] {
				t.Errorf("result %+v, want refused %s with %q in the detail", g, tc.reason, tc.detail)
			}
			ids[g.RequestID] = true
		})
	}
	if p := r.radio.Received(); len(p) != 1 || string(p[0].GetDecoded().GetPayload()) != "marks the end" {
		t.Errorf("radio got %q", payloads(p))
	}
	if n := r.gw.Stats.DownlinkRejected.Load(); n != uint64(len(cases)) {
		t.Errorf("rejected %d, want %d", n, len(cases))
	}
}

// A text to everyone: queued, then sent once the radio took it, and
// nothing more; the packet id in the results is the packet's. A request
// without an id gets its results all the same.
func TestDownlinkSentResults(t *testing.T) {
	r := startRig(t, tcpTransport, nil)
	res := r.subResults(t)
	r.pub(t, downlinkTopic, `{"id":17,"type":"sendtext","payload":"Hello mesh"}`)
	got := res.wait(t, "17", topics.DownlinkQueued, topics.DownlinkSent)
	p := r.radio.Received()
	if len(p) != 1 || p[0].GetId() != got[1].PacketID || got[0].PacketID != got[1].PacketID || p[0].GetWantAck() {
		t.Errorf("radio got %v; results %+v", p, got)
	}
	if got[1].Reason != "" || got[1].Gateway != "!5eed0001" {
		t.Errorf("sent result %+v", got[1])
	}
	r.pub(t, downlinkTopic, `{"type":"sendtext","payload":"no id"}`)
	res.wait(t, "", topics.DownlinkQueued, topics.DownlinkSent)
	if got := res.of(t, "17"); len(got) != 2 {
		t.Errorf("request 17: %s after its end", res.show(t, "17"))
	}
}

// A direct message asks its destination for an acknowledgement: queued,
// then acked when the destination's ACK comes, never sent; failed with
// the radio's reason when it gives up; failed with TIMEOUT when no answer
// comes at all. A relay's repeat is no acknowledgement.
func TestDirectMessageResults(t *testing.T) {
	const ana = 0xa1b2c3d4
	r := startRig(t, tcpTransport, func(c *serialgw.Config) { c.AckTimeout = 2 * time.Second },
		func(c *meshsim.Config) {
			c.AnswerDirect = func(p *meshpb.MeshPacket) (meshpb.Routing_Error, bool) {
				switch string(p.GetDecoded().GetPayload()) {
				case "ack me":
					return meshpb.Routing_NONE, true
				case "nobody home":
					return meshpb.Routing_MAX_RETRANSMIT, true
				}
				return 0, false
			}
		})
	res := r.subResults(t)
	r.pub(t, downlinkTopic, `{"id":"dm-ack","type":"sendtext","payload":"ack me","to":2712847316}`)
	acked := res.wait(t, `"dm-ack"`, topics.DownlinkQueued, topics.DownlinkAcked)
	p := r.radio.Received()
	if len(p) != 1 || !p[0].GetWantAck() || p[0].GetTo() != ana || p[0].GetId() != acked[1].PacketID {
		t.Errorf("radio got %v; results %+v", p, acked)
	}

	r.pub(t, downlinkTopic, `{"id":"dm-nak","type":"sendtext","payload":"nobody home","to":2712847316}`)
	nak := res.wait(t, `"dm-nak"`, topics.DownlinkQueued, topics.DownlinkFailed)
	if nak[1].Reason != "MAX_RETRANSMIT" || nak[1].Detail == "" || nak[1].PacketID == 0 {
		t.Errorf("failed result %+v", nak[1])
	}

	r.pub(t, downlinkTopic, `{"id":"dm-silent","type":"sendtext","payload":"into the void","to":2712847316}`)
	// Once the radio has taken it: a relay repeating it is an implicit
	// acknowledgement from our own radio, not the destination's.
	testutil.Eventually(t, wait, func() bool { return r.gw.Stats.Sent.Load() == 3 }, "radio took %d packets", r.gw.Stats.Sent.Load())
	self := r.radio.Config().NodeNum
	implicit := r.radio.TextPacket(self, "")
	routing, _ := proto.Marshal(&meshpb.Routing{Variant: &meshpb.Routing_ErrorReason{ErrorReason: meshpb.Routing_NONE}})
	implicit.To = self
	implicit.PayloadVariant = &meshpb.MeshPacket_Decoded{Decoded: &meshpb.Data{Portnum: meshpb.PortNum_ROUTING_APP, Payload: routing, RequestId: r.radio.Received()[2].GetId()}}
	if !r.radio.Inject(implicit) {
		t.Fatal("inject failed")
	}
	silent := res.wait(t, `"dm-silent"`, topics.DownlinkQueued, topics.DownlinkFailed)
	if silent[1].Reason != "TIMEOUT" || !strings.Contains(silent[1].Detail, "!a1b2c3d4") {
		t.Errorf("failed result %+v", silent[1])
	}
}

// A text the radio takes and then drops (its 2 s rule, with the bridge's
// spacing set below it) fails with the radio's reason, not sent.
func TestRadioDropAfterTakingFails(t *testing.T) {
	r := startRig(t, tcpTransport, func(c *serialgw.Config) { c.TextInterval = time.Millisecond })
	res := r.subResults(t)
	r.pub(t, downlinkTopic, `{"id":"first","type":"sendtext","payload":"first"}`)
	r.pub(t, downlinkTopic, `{"id":"second","type":"sendtext","payload":"second, too soon"}`)
	res.wait(t, `"first"`, topics.DownlinkQueued, topics.DownlinkSent)
	second := res.wait(t, `"second"`, topics.DownlinkQueued, topics.DownlinkFailed)
	if second[1].Reason != "RATE_LIMIT_EXCEEDED" {
		t.Errorf("failed result %+v", second[1])
	}
}

// No local tool can forge a result: neither one that may write only the
// downlink nor one allowed every Meshtastic topic. A reader sees only
// the bridge's.
func TestDownlinkResultNotForgeable(t *testing.T) {
	r := startRig(t, tcpTransport, nil)
	res := r.subResults(t)
	forged := `{"id":"real","request_id":1,"status":"acked"}`
	r.pub(t, topics.JSONResult, forged)
	r.pubAs(t, "gateway", "gw-pw", topics.JSONResult, forged)
	r.pub(t, downlinkTopic, `{"id":"real","type":"sendtext","payload":"the real one"}`)
	got := res.wait(t, `"real"`, topics.DownlinkQueued, topics.DownlinkSent)
	if got[0].RequestID == 1 {
		t.Errorf("a forged result arrived: %+v", got)
	}
}
