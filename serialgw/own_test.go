//go:build integration

package serialgw_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/serialgw"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// What the radio sends for the room and the JSON downlink appears on the
// Meshtastic topics as the firmware publishes what it originates, watched
// by a real mosquitto_sub.

// sendDM asks for a direct message on topics.MeshTX, as the XMPP side does.
func (r *rig) sendDM(t *testing.T, id, to uint32, text string) {
	t.Helper()
	b, _ := proto.Marshal(&meshpb.ServiceEnvelope{
		GatewayId: "test",
		Packet: &meshpb.MeshPacket{Id: id, To: to, PayloadVariant: &meshpb.MeshPacket_Decoded{Decoded: &meshpb.Data{
			Portnum: meshpb.PortNum_TEXT_MESSAGE_APP, Payload: []byte(text),
		}}},
	})
	if err := r.broker.Publish(topics.MeshTX, b, false); err != nil {
		t.Fatal(err)
	}
}

// sighting is one packet of the radio's own seen on a topic.
type sighting struct {
	topic string
	id    uint32
	text  string // the text, or "" for other ports
	js    map[string]any
	env   *meshpb.ServiceEnvelope
	data  *meshpb.Data // the envelope's, decrypted
}

// ownSightings decodes every line about a packet from the radio (from =
// its node number): envelopes decrypted with the LongFast key, JSON forms,
// and the bridge topic.
func ownSightings(t *testing.T, lines []string) []sighting {
	t.Helper()
	var out []sighting
	for _, l := range lines {
		topic, _, _ := strings.Cut(l, " ")
		payload := hexPayload(t, l)
		switch {
		case strings.Contains(topic, "/2/json/") && !strings.Contains(topic, "/2/json/mqtt/"):
			var js map[string]any
			if json.Unmarshal(payload, &js) != nil || js["from"] != float64(simNum) {
				continue
			}
			s := sighting{topic: topic, id: uint32(js["id"].(float64)), js: js}
			if p, ok := js["payload"].(map[string]any); ok && js["type"] == "text" {
				s.text, _ = p["text"].(string)
			}
			out = append(out, s)
		case strings.Contains(topic, "/2/e/") || topic == topics.MeshRX:
			env := new(meshpb.ServiceEnvelope)
			if proto.Unmarshal(payload, env) != nil || env.GetPacket().GetFrom() != simNum {
				continue
			}
			s := sighting{topic: topic, id: env.GetPacket().GetId(), env: env, data: env.GetPacket().GetDecoded()}
			if env.GetPacket().GetEncrypted() != nil {
				s.data = decrypt(t, env)
			}
			if s.data.GetPortnum() == meshpb.PortNum_TEXT_MESSAGE_APP {
				s.text = string(s.data.GetPayload())
			}
			out = append(out, s)
		}
	}
	return out
}

// A text from the room and one from the JSON downlink each appear once on
// e/ (encrypted with the channel key, from the radio, with the id it went
// out with) and once on json/, after the radio took them, and never on the
// bridge topic the XMPP side posts from.
func TestOwnPacketsPublished(t *testing.T) {
	r := startRig(t, tcpTransport, nil)
	lines := r.sub(t, "#")
	res := r.resultsByOrigin(t)
	r.send(t, 1, "", "Hello from the room")
	testutil.Eventually(t, wait, func() bool { return len(res.of("test")) == 1 }, "no result for the room's text")
	r.pub(t, "msh/EU_868/2/json/mqtt/", `{"type":"sendtext","payload":"Hello from Node-RED"}`)
	testutil.Eventually(t, wait, func() bool { return len(r.radio.Received()) == 2 }, "radio got %d packets", len(r.radio.Received()))

	for _, p := range r.radio.Received() {
		text := string(p.GetDecoded().GetPayload())
		testutil.Eventually(t, wait, func() bool {
			n := 0
			for _, s := range ownSightings(t, lines.All()) {
				if s.id == p.GetId() {
					n++
				}
			}
			return n >= 2
		}, "%q not published on e/ and json/", text)
		var env, js int
		for _, s := range ownSightings(t, lines.All()) {
			if s.id != p.GetId() {
				continue
			}
			switch s.topic {
			case simEnvTopic:
				env++
				pk := s.env.GetPacket()
				if s.text != text || s.data.GetPortnum() != meshpb.PortNum_TEXT_MESSAGE_APP || pk.GetTo() != mesh.Broadcast ||
					pk.GetHopLimit() != 3 || pk.GetHopStart() != 3 || s.env.GetChannelId() != "LongFast" || s.env.GetGatewayId() != "!5eed0001" {
					t.Errorf("envelope of %q = %v, decrypted %v", text, s.env, s.data)
				}
			case simJSONTopic:
				js++
				if s.text != text || s.js["type"] != "text" || s.js["sender"] != "!5eed0001" || s.js["to"] != float64(mesh.Broadcast) || s.js["channel"] != float64(0) {
					t.Errorf("JSON of %q = %v", text, s.js)
				}
			default:
				t.Errorf("%q published on %s", text, s.topic)
			}
		}
		if env != 1 || js != 1 {
			t.Errorf("%q: %d envelopes and %d JSON forms, want one of each", text, env, js)
		}
	}
}

// A packet the radio took and then dropped (a text under its 2 s rate
// limit: the QueueStatus says taken, the NAK that follows says dropped)
// never went on the air and is not published; a direct message, which the
// firmware encrypts end to end to its recipient, is not published either.
func TestOwnPacketsNotPublished(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		// Texts not spaced by the bridge, so the radio's rule drops one.
		r := startRig(t, tcpTransport, func(c *serialgw.Config) { c.TextInterval = time.Millisecond })
		lines := r.sub(t, "#")
		res := r.resultsByOrigin(t)
		r.send(t, 1, "", "taken")
		r.send(t, 2, "", "dropped under the rate limit")
		testutil.Eventually(t, wait, func() bool { return slices.Contains(res.of("test"), meshpb.Routing_RATE_LIMIT_EXCEEDED) },
			"the radio dropped nothing: results %v", res.of("test"))
		// Published after it, had it not been dropped: a position from
		// the JSON downlink (the radio's text rule does not apply to it).
		r.pub(t, "msh/EU_868/2/json/mqtt/", `{"type":"sendposition","payload":{"latitude_i":515100000,"longitude_i":-900000}}`)
		lines.WaitFor(t, wait, func(l string) bool {
			return strings.HasPrefix(l, simJSONTopic+" ") && strings.Contains(string(hexPayload(t, l)), `"type":"position"`)
		})
		var texts []string
		for _, s := range ownSightings(t, lines.All()) {
			if s.text != "" {
				texts = append(texts, s.topic+" "+s.text)
			}
		}
		want := simEnvTopic + " taken|" + simJSONTopic + " taken"
		if strings.Join(texts, "|") != want {
			t.Errorf("texts published = %q, want %q", texts, want)
		}
	})
	t.Run("direct message", func(t *testing.T) {
		r := startRig(t, tcpTransport, nil)
		lines := r.sub(t, "#")
		res := r.resultsByOrigin(t)
		r.sendDM(t, 1, 0xa1b2c3d4, "for Ana only")
		testutil.Eventually(t, wait, func() bool { return len(res.of("test")) == 1 }, "no result for the direct message")
		r.pub(t, "msh/EU_868/2/json/mqtt/", `{"type":"sendtext","payload":"for Kofi only","to":324478056}`)
		r.send(t, 2, "", "for everyone")
		testutil.Eventually(t, wait, func() bool { return len(r.radio.Received()) == 3 }, "radio got %d packets", len(r.radio.Received()))
		lines.WaitFor(t, wait, func(l string) bool {
			return strings.HasPrefix(l, simJSONTopic+" ") && strings.Contains(string(hexPayload(t, l)), "for everyone")
		})
		dms := 0
		for _, p := range r.radio.Received() {
			if p.GetTo() == mesh.Broadcast {
				continue
			}
			dms++
			for _, s := range ownSightings(t, lines.All()) {
				if s.id == p.GetId() {
					t.Errorf("direct message %q published on %s", p.GetDecoded().GetPayload(), s.topic)
				}
			}
		}
		if dms != 2 {
			t.Errorf("radio sent %d direct messages, want 2", dms)
		}
		// On the Meshtastic topics the texts appear only in the downlink
		// that asked for one of them.
		for _, l := range lines.All() {
			mqtt := strings.HasPrefix(l, "msh/") && !strings.HasPrefix(l, "msh/EU_868/2/json/mqtt/ ")
			if b := string(hexPayload(t, l)); strings.Contains(b, "only") && (mqtt || strings.HasPrefix(l, topics.MeshRX+" ")) {
				t.Errorf("direct message text visible on %s", strings.Fields(l)[0])
			}
		}
	})
}
