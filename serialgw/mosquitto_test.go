//go:build integration

package serialgw_test

import (
	"encoding/hex"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/internal/meshsim"
	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/serialgw"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// Tests that watch and drive the radio link through real mosquitto clients.

// sub starts a real mosquitto_sub printing "topic hexpayload" lines. It
// also subscribes to the retained bridge status, whose delivery shows that
// the subscription is in place before the test goes on.
func (r *rig) sub(t *testing.T, filter string) *testutil.Lines {
	t.Helper()
	testutil.NeedCommand(t, "mosquitto_sub")
	status := topics.Status(mesh.NodeID(r.radio.Config().NodeNum))
	lines := testutil.Start(t, "mosquitto_sub", "-h", r.host, "-p", r.port, "-u", "tool", "-P", "tool-pw", "-t", filter, "-t", status, "-F", "%t %x")
	lines.WaitFor(t, wait, func(s string) bool { return strings.HasPrefix(s, status+" ") })
	return lines
}

// pub publishes as a local tool; pubAs as another user of the rig's broker.
func (r *rig) pub(t *testing.T, topic, msg string) {
	t.Helper()
	r.pubAs(t, "tool", "tool-pw", topic, msg)
}

func (r *rig) pubAs(t *testing.T, user, pass, topic, msg string) {
	t.Helper()
	testutil.NeedCommand(t, "mosquitto_pub")
	out, err := exec.Command("mosquitto_pub", "-h", r.host, "-p", r.port, "-u", user, "-P", pass, "-t", topic, "-m", msg).CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_pub: %v %s", err, out)
	}
}

// hexPayload extracts and decodes the payload of a "topic hex" line.
func hexPayload(t *testing.T, line string) []byte {
	_, h, _ := strings.Cut(line, " ")
	b, err := hex.DecodeString(h)
	if err != nil {
		t.Fatalf("payload of %q: %v", line, err)
	}
	return b
}

// A text heard on the mesh reaches a real mosquitto_sub as firmware JSON and
// as an encrypted ServiceEnvelope that decrypts with the channel key.
func TestUplinkToMosquitto(t *testing.T) {
	each(t, func(t *testing.T, tr transport) {
		r := startRig(t, tr, nil)
		lines := r.sub(t, "msh/#")
		// Keep injecting until the subscriber is surely in place: the first
		// delivered copy tells; later ones are deduplicated by (from, id).
		pkt := r.radio.TextPacket(0xa1b2c3d4, "Hello from the ridge 🌄")
		r.radio.Inject(pkt)

		jsonTopic := "msh/EU_868/2/json/LongFast/!5eed0001 "
		jl := lines.WaitFor(t, wait, func(s string) bool { return strings.HasPrefix(s, jsonTopic) })
		var js map[string]any
		if err := json.Unmarshal(hexPayload(t, jl), &js); err != nil {
			t.Fatal(err)
		}
		if js["type"] != "text" || js["from"] != float64(0xa1b2c3d4) || js["sender"] != "!5eed0001" ||
			js["payload"].(map[string]any)["text"] != "Hello from the ridge 🌄" {
			t.Errorf("JSON uplink = %v", js)
		}

		el := lines.WaitFor(t, wait, func(s string) bool { return strings.HasPrefix(s, "msh/EU_868/2/e/LongFast/!5eed0001 ") })
		var env meshpb.ServiceEnvelope
		if err := proto.Unmarshal(hexPayload(t, el), &env); err != nil {
			t.Fatal(err)
		}
		p := env.GetPacket()
		if env.GetChannelId() != "LongFast" || env.GetGatewayId() != "!5eed0001" || p.GetChannel() != 8 || p.GetEncrypted() == nil {
			t.Fatalf("envelope = %v", &env)
		}
		key, _ := mesh.ExpandPSK([]byte{1})
		plain, _ := mesh.Crypt(key, p.GetFrom(), p.GetId(), p.GetEncrypted())
		var d meshpb.Data
		if err := proto.Unmarshal(plain, &d); err != nil || !proto.Equal(&d, pkt.GetDecoded()) {
			t.Errorf("decrypted Data = %v (%v), want %v", &d, err, pkt.GetDecoded())
		}
		if got := countPrefix(lines.All(), jsonTopic); got != 1 {
			t.Errorf("%d JSON copies of one packet, want 1", got)
		}
	})
}

func countPrefix(lines []string, prefix string) int {
	n := 0
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}

// A real mosquitto_pub sendtext on the JSON downlink topic reaches the radio
// as a ToRadio packet, with our own id and the radio's hop limit.
func TestDownlinkFromMosquitto(t *testing.T) {
	each(t, func(t *testing.T, tr transport) {
		r := startRig(t, tr, nil)
		r.pub(t, "msh/EU_868/2/json/mqtt/", `{"from": 1592590337, "type": "sendtext", "payload": "Hi mesh, from Node-RED"}`)
		testutil.Eventually(t, wait, func() bool { return len(r.radio.Received()) == 1 }, "radio got %d packets", len(r.radio.Received()))
		p := r.radio.Received()[0]
		if string(p.GetDecoded().GetPayload()) != "Hi mesh, from Node-RED" || p.GetDecoded().GetPortnum() != meshpb.PortNum_TEXT_MESSAGE_APP ||
			p.GetTo() != mesh.Broadcast || p.GetId() == 0 || p.GetHopLimit() != 3 {
			t.Errorf("radio received %v", p)
		}
		// Refused: a foreign from, bad JSON, unknown type, a text too long.
		for _, bad := range []string{
			`{"from": 1, "type": "sendtext", "payload": "spoof"}`,
			`{"type": "sendtext", "payload": `,
			`{"type": "reboot", "payload": ""}`,
			`{"type": "sendtext", "payload": "` + strings.Repeat("x", 201) + `"}`,
		} {
			r.pub(t, "msh/EU_868/2/json/mqtt/", bad)
		}
		testutil.Eventually(t, wait, func() bool { return r.gw.Stats.DownlinkRejected.Load() == 4 }, "rejected = %d", r.gw.Stats.DownlinkRejected.Load())
		if n := len(r.radio.Received()); n != 1 {
			t.Errorf("radio got %d packets after malformed downlinks, want 1", n)
		}
	})
}

// With encryption off the envelope carries the decoded packet, channel index included.
func TestDecodedEnvelopes(t *testing.T) {
	r := startRig(t, tcpTransport, func(c *serialgw.Config) { c.Encrypt = false })
	lines := r.sub(t, "msh/+/2/e/#")
	pkt := r.radio.TextPacket(0x13572468, "plain")
	r.radio.Inject(pkt)
	el := lines.WaitFor(t, wait, func(s string) bool { return strings.HasPrefix(s, "msh/EU_868/2/e/LongFast/!5eed0001 ") })
	var env meshpb.ServiceEnvelope
	if err := proto.Unmarshal(hexPayload(t, el), &env); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(env.GetPacket(), pkt) {
		t.Errorf("envelope packet = %v, want %v", env.GetPacket(), pkt)
	}
}

// In client proxy mode the radio publishes its own MQTT uplink through us:
// it is passed through verbatim, not published twice, and envelopes from
// other gateways on its downlink channels are passed down to it (but not
// its own).
func TestClientProxy(t *testing.T) {
	r := startRig(t, tcpTransport, nil, func(c *meshsim.Config) { c.ClientProxy = true })
	lines := r.sub(t, "msh/#")
	r.radio.Inject(r.radio.TextPacket(0xa1b2c3d4, "via proxy"))
	envTopic := "msh/EU_868/2/e/LongFast/!5eed0001 "
	lines.WaitFor(t, wait, func(s string) bool { return strings.HasPrefix(s, envTopic) })
	// A second packet marks the point by which any second copy of the first would be out.
	r.radio.Inject(r.radio.TextPacket(0xa1b2c3d4, "second"))
	testutil.Eventually(t, wait, func() bool { return countPrefix(lines.All(), envTopic) >= 2 }, "second envelope missing")
	if n := countPrefix(lines.All(), envTopic); n != 2 {
		t.Errorf("%d envelopes for 2 packets: published twice?", n)
	}

	// Our own first: by the time the other gateway's arrives, a looped copy
	// of ours would have arrived before it.
	r.pubAs(t, "gateway", "gw-pw", "msh/EU_868/2/e/LongFast/!5eed0001", "our own, must not loop")
	r.pubAs(t, "gateway", "gw-pw", "msh/EU_868/2/e/LongFast/!0000beef", "envelope from another gateway")
	testutil.Eventually(t, wait, func() bool { return len(r.radio.ProxyReceived()) >= 1 }, "no proxy downlink")
	got := r.radio.ProxyReceived()
	if len(got) != 1 || got[0].GetTopic() != "msh/EU_868/2/e/LongFast/!0000beef" || string(got[0].GetData()) != "envelope from another gateway" {
		t.Errorf("proxy downlink = %v", got)
	}
}
