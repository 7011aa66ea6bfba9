package serialgw_test

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jshiffer/lora-xmpp-bridge/internal/meshsim"
	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/serialgw"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// originResults collects the outcomes on topics.MeshResult by origin, in
// order, whatever the origin.
type originResults struct {
	mu  sync.Mutex
	got map[string][]meshpb.Routing_Error
}

func (r *rig) resultsByOrigin(t *testing.T) *originResults {
	res := &originResults{got: map[string][]meshpb.Routing_Error{}}
	unsub, err := r.broker.Subscribe(topics.MeshResult, func(_ string, b []byte) {
		rt, err := topics.ParseResult(b)
		if err != nil {
			t.Errorf("undecodable result: %v", err)
			return
		}
		res.mu.Lock()
		res.got[rt.Origin] = append(res.got[rt.Origin], rt.Reason)
		res.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unsub)
	return res
}

func (res *originResults) of(origin string) []meshpb.Routing_Error {
	res.mu.Lock()
	defer res.mu.Unlock()
	return append([]meshpb.Routing_Error(nil), res.got[origin]...)
}

func (r *rig) publish(t *testing.T, topic, payload string) {
	t.Helper()
	if err := r.broker.Publish(topic, []byte(payload), false); err != nil {
		t.Fatal(err)
	}
}

func payloads(ps []*meshpb.MeshPacket) []string {
	var out []string
	for _, p := range ps {
		out = append(out, string(p.GetDecoded().GetPayload()))
	}
	return out
}

// The radio's transmit queue holds 200 packets waiting; the next is
// refused as too much at once (RATE_LIMIT_EXCEEDED) whichever way it came:
// from the room's gateway on sovereign/mesh/tx or from the JSON downlink.
func TestQueueFullIsRateLimitOnEveryPath(t *testing.T) {
	// Texts an hour apart: after the first, every text waits in the queue.
	r := startRig(t, tcpTransport, func(c *serialgw.Config) { c.TextInterval = time.Hour })
	res := r.resultsByOrigin(t)
	r.send(t, 1, "", "goes out")
	testutil.Eventually(t, wait, func() bool { return len(r.radio.Received()) == 1 }, "first text not sent")
	for i := uint32(2); i <= 201; i++ {
		r.send(t, i, "", fmt.Sprintf("waits %d", i))
	}
	// Requests are taken in off the publisher's goroutine.
	testutil.Eventually(t, wait, func() bool { return r.gw.QueueLen() == 200 }, "queue holds %d, want 200", r.gw.QueueLen())
	r.send(t, 202, "", "one too many")
	r.publish(t, "msh/EU_868/2/json/mqtt/", `{"type":"sendtext","payload":"one too many, from a local tool"}`)
	testutil.Eventually(t, wait, func() bool { return len(res.of("mqtt-json")) == 1 && len(res.of("test")) == 2 },
		"results: room %v, downlink %v", res.of("test"), res.of("mqtt-json"))
	if got := res.of("test"); got[1] != meshpb.Routing_RATE_LIMIT_EXCEEDED {
		t.Errorf("the 201st waiting from sovereign/mesh/tx: %v, want RATE_LIMIT_EXCEEDED", got[1])
	}
	if got := res.of("mqtt-json")[0]; got != meshpb.Routing_RATE_LIMIT_EXCEEDED {
		t.Errorf("the 201st waiting from the JSON downlink: %v, want RATE_LIMIT_EXCEEDED", got)
	}
	if n := r.gw.Stats.DownlinkRejected.Load(); n != 1 {
		t.Errorf("downlink rejected %d, want 1", n)
	}
}

// A JSON downlink published before the radio's first handshake is queued
// and sent once the radio is ready, if it came under the radio's root;
// one under another region's root is not the radio's, as it would not be
// for the firmware, and one that does not parse is refused and counted.
func TestJSONDownlinkBeforeHandshake(t *testing.T) {
	for _, tc := range []struct {
		name, root, ours, other string
	}{
		{"root from the region", "", "msh/EU_868/2/json/mqtt/", "msh/US/2/json/mqtt/"},
		{"root set", "mesh/home", "mesh/home/2/json/mqtt/", "msh/EU_868/2/json/mqtt/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := launchRig(t, tcpTransport, func(c *serialgw.Config) { c.Root, c.HandshakeTimeout = tc.root, 300*time.Millisecond },
				func(radio *meshsim.Radio) { radio.IgnoreConfigRequests(1 << 30) })
			// The gateway subscribes before it first asks the radio.
			testutil.Eventually(t, wait, func() bool { return r.gw.Stats.Handshakes.Load() >= 1 }, "the bridge never asked the radio")
			r.publish(t, tc.ours, `{"type":"sendtext","payload":"before the handshake"}`)
			r.publish(t, tc.other, `{"type":"sendtext","payload":"for another gateway"}`)
			r.publish(t, tc.ours, `{"type":"sendtext","payload":`)
			r.publish(t, tc.ours, `{"type":"sendtext","payload":"and then a second"}`)
			if r.radio.Ready() {
				t.Fatal("the radio answered a handshake it was to ignore")
			}
			r.radio.IgnoreConfigRequests(0)
			testutil.Eventually(t, wait, r.radio.Ready, "no handshake")
			r.publish(t, tc.ours, `{"type":"sendtext","payload":"after the handshake"}`)
			r.publish(t, tc.other, `{"type":"sendtext","payload":"for another gateway, after"}`)
			r.publish(t, tc.ours, `{"type":"sendtext","payload":"marks the end"}`)
			testutil.Eventually(t, 3*wait, func() bool { return len(r.radio.Received()) >= 4 }, "radio got %q", payloads(r.radio.Received()))
			if got := strings.Join(payloads(r.radio.Received()), ","); got != "before the handshake,and then a second,after the handshake,marks the end" {
				t.Errorf("radio got %s", got)
			}
			if n := r.gw.Stats.DownlinkRejected.Load(); n != 1 {
				t.Errorf("downlink rejected %d, want 1 (the malformed one)", n)
			}
		})
	}
}

// In client proxy mode a message too large for a 512-byte frame to the
// radio is not passed down: counted and logged, the link untouched,
// however often it comes; one that fits still goes down.
func TestClientProxyOversize(t *testing.T) {
	r := startRig(t, tcpTransport, nil, func(c *meshsim.Config) { c.ClientProxy = true })
	topic := "msh/EU_868/2/e/LongFast/!0000beef"
	for range 5 {
		if err := r.broker.Publish(topic, bytes.Repeat([]byte{0xa5}, 600), false); err != nil {
			t.Fatal(err)
		}
	}
	r.publish(t, topic, "fits in a frame")
	testutil.Eventually(t, wait, func() bool { return len(r.radio.ProxyReceived()) >= 1 }, "no proxy downlink")
	got := r.radio.ProxyReceived()
	if len(got) != 1 || string(got[0].GetData()) != "fits in a frame" {
		t.Errorf("proxy downlink %d messages, first %q", len(got), got[0].GetData())
	}
	if n := r.gw.Stats.Reconnects.Load(); n != 0 {
		t.Errorf("%d reconnects", n)
	}
	if n := r.radio.Handshakes(); n != 1 {
		t.Errorf("%d handshakes, want 1", n)
	}
	if n := r.gw.Stats.ProxyOversize.Load(); n != 5 {
		t.Errorf("oversize proxy messages counted %d, want 5", n)
	}
}
