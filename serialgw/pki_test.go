//go:build integration

package serialgw_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/internal/meshsim"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/serialgw"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// pkiPackets are a PKI direct message to the bridge's radio, which the radio
// hands over decrypted with pki_encrypted set, and one between two other
// nodes that the radio relays but cannot read.
func pkiPackets(r *rig) (toUs, between *meshpb.MeshPacket) {
	toUs = r.radio.TextPacket(0xa1b2c3d4, "meet me at the well, only you")
	toUs.To, toUs.Channel, toUs.PkiEncrypted = 0x5eed0001, 0, true
	toUs.PublicKey = make([]byte, 32)

	between = r.radio.TextPacket(0xa1b2c3d4, "")
	between.To, between.Channel, between.PkiEncrypted = 0x0badcafe, 0, true
	between.PayloadVariant = &meshpb.MeshPacket_Encrypted{Encrypted: []byte{0x8a, 0x11, 0x52, 0x07, 0xd3, 0x9e}}
	return toUs, between
}

// pkiSightings collects, for each PKI packet, the topics on which it
// appeared, by packet id in envelopes and JSON alike.
func pkiSightings(t *testing.T, lines []string, ids ...uint32) map[uint32][]string {
	t.Helper()
	seen := map[uint32][]string{}
	want := map[uint32]bool{}
	for _, id := range ids {
		want[id] = true
	}
	for _, l := range lines {
		topic, _, _ := strings.Cut(l, " ")
		payload := hexPayload(t, l)
		var id uint32
		switch {
		case strings.Contains(topic, "/2/json/"):
			var js struct{ ID uint32 }
			if json.Unmarshal(payload, &js) == nil {
				id = js.ID
			}
		case strings.Contains(topic, "/2/e/") || topic == topics.MeshRX:
			var env meshpb.ServiceEnvelope
			if proto.Unmarshal(payload, &env) == nil {
				id = env.GetPacket().GetId()
			}
		}
		if want[id] {
			seen[id] = append(seen[id], topic)
		}
	}
	return seen
}

// A PKI direct message never appears on a channel topic, is never
// re-encrypted with a channel key, and on a public broker appears nowhere.
// A broadcast sent after the PKI packets marks the point by which anything
// published about them has been published.
func TestPKIDirectMessagesStayPrivate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		public bool
		want   func(toUs, between uint32) map[uint32][]string
	}{
		{"private broker", false, func(toUs, between uint32) map[uint32][]string {
			return map[uint32][]string{
				toUs:    {topics.MeshRX, "msh/EU_868/2/json/PKI/!5eed0001"},
				between: {"msh/EU_868/2/e/PKI/!5eed0001"},
			}
		}},
		{"public broker", true, func(uint32, uint32) map[uint32][]string { return map[uint32][]string{} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// On a public broker the owner opened the channel and JSON to
			// MQTT: only then is anything published there.
			r := startRig(t, tcpTransport, func(c *serialgw.Config) { c.PublicBroker = tc.public },
				func(c *meshsim.Config) { c.Uplink, c.JSON = tc.public, tc.public })
			lines := r.sub(t, "#")
			toUs, between := pkiPackets(r)
			r.radio.Inject(toUs)
			r.radio.Inject(between)
			marker := r.radio.TextPacket(0x13572468, "after the private ones")
			r.radio.Inject(marker)
			lines.WaitFor(t, wait, func(s string) bool { return strings.HasPrefix(s, "msh/EU_868/2/json/LongFast/!5eed0001 ") })

			got := pkiSightings(t, lines.All(), toUs.GetId(), between.GetId())
			want := tc.want(toUs.GetId(), between.GetId())
			for id, topicsWanted := range want {
				if strings.Join(got[id], " ") != strings.Join(topicsWanted, " ") {
					t.Errorf("packet %08x published on %q, want exactly %q", id, got[id], topicsWanted)
				}
			}
			for id, seenOn := range got {
				if _, ok := want[id]; !ok {
					t.Errorf("packet %08x published on %q, want nowhere", id, seenOn)
				}
			}
			for _, l := range lines.All() {
				if strings.Contains(string(hexPayload(t, l)), "meet me at the well") && !strings.Contains(l, "/2/json/PKI/") && !strings.HasPrefix(l, topics.MeshRX+" ") {
					t.Errorf("private text visible on %s", strings.Fields(l)[0])
				}
			}
		})
	}
}

// On a public broker only what the radio's owner opened to MQTT is
// published: channels with uplink enabled, and JSON only when the MQTT
// module's JSON output is on. A second text, once it shows on the bridge's
// own topic, marks the point by which anything about the first would have
// been published.
func TestPublicBrokerHonoursTheRadiosSettings(t *testing.T) {
	for _, tc := range []struct {
		name         string
		uplink, json bool
		want         []string // topics the text appears on
	}{
		{"channel closed to MQTT", false, false, []string{topics.MeshRX}},
		{"channel open, JSON off", true, false, []string{topics.MeshRX, "msh/EU_868/2/e/LongFast/!5eed0001"}},
		{"channel open, JSON on", true, true, []string{topics.MeshRX, "msh/EU_868/2/e/LongFast/!5eed0001", "msh/EU_868/2/json/LongFast/!5eed0001"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startRig(t, tcpTransport, func(c *serialgw.Config) { c.PublicBroker = true },
				func(c *meshsim.Config) { c.Uplink, c.JSON = tc.uplink, tc.json })
			lines := r.sub(t, "#")
			text := r.radio.TextPacket(0x13572468, "for the village only")
			marker := r.radio.TextPacket(0x13572468, "marker")
			r.radio.Inject(text)
			r.radio.Inject(marker)
			lines.WaitFor(t, wait, func(s string) bool {
				return strings.HasPrefix(s, topics.MeshRX+" ") && len(pkiSightings(t, []string{s}, marker.GetId())) > 0
			})
			got := pkiSightings(t, lines.All(), text.GetId())[text.GetId()]
			slices.Sort(got)
			want := slices.Clone(tc.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("published on %q, want %q", got, want)
			}
		})
	}
}
