package xmppgw

import (
	"slices"
	"strings"
	"testing"

	"mellium.im/xmpp/jid"

	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

const testRoom = "village@conference.example.org"

// Which radio sends what a room says, for the radios the broker shows: one
// per mesh, the online one with the lowest node number, and a mesh is what
// the operator named, or what the radios heard of each other.
func TestTransmitters(t *testing.T) {
	type radio struct {
		id     string
		online bool
		mesh   string
	}
	for _, tc := range []struct {
		name   string
		radios []radio
		heard  [][2]string // pairs that heard each other on air
		except string
		want   []string
	}{
		{name: "none known", want: nil},
		{name: "one radio, offline: it keeps the request", radios: []radio{{id: "!00000002"}}, want: []string{"!00000002"}},
		{name: "two radios, nothing known of their meshes: one each",
			radios: []radio{{id: "!00000002", online: true}, {id: "!00000001", online: true}},
			want:   []string{"!00000001", "!00000002"}},
		{name: "named one mesh: the lowest online",
			radios: []radio{{id: "!00000002", online: true, mesh: "valley"}, {id: "!00000001", online: true, mesh: "valley"}},
			want:   []string{"!00000001"}},
		{name: "the lowest gone: the next takes over",
			radios: []radio{{id: "!00000002", online: true, mesh: "valley"}, {id: "!00000001", mesh: "valley"}},
			want:   []string{"!00000002"}},
		{name: "heard each other: one mesh",
			radios: []radio{{id: "!00000003", online: true}, {id: "!00000002", online: true}},
			heard:  [][2]string{{"!00000003", "!00000002"}},
			want:   []string{"!00000002"}},
		{name: "heard through a third",
			radios: []radio{{id: "!00000003", online: true}, {id: "!00000002"}, {id: "!00000001", online: true, mesh: "x"}},
			heard:  [][2]string{{"!00000003", "!00000002"}, {"!00000001", "!00000002"}},
			want:   []string{"!00000001"}},
		{name: "two named meshes",
			radios: []radio{{id: "!00000004", online: true, mesh: "hill"}, {id: "!00000003", online: true, mesh: "valley"},
				{id: "!00000002", online: true, mesh: "hill"}, {id: "!00000001", mesh: "valley"}},
			want: []string{"!00000003", "!00000002"}}, // meshes in the order of their lowest radio
		{name: "a relay skips the mesh it came from",
			radios: []radio{{id: "!00000004", online: true, mesh: "hill"}, {id: "!00000003", online: true, mesh: "valley"},
				{id: "!00000002", online: true, mesh: "hill"}, {id: "!00000001", mesh: "valley"}},
			except: "!00000001", want: []string{"!00000002"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := newRadios()
			for _, r := range tc.radios {
				st := topics.StatusRecord{State: topics.LinkDisconnected}
				if r.online {
					st.State = topics.LinkOnline
				}
				rs.setStatus(r.id, st)
				rs.setRecord(r.id, topics.RadioRecord{ID: r.id, Num: nodeNum(r.id), Mesh: r.mesh})
			}
			for _, h := range tc.heard {
				if !rs.heardOnAir(h[0], h[1]) {
					t.Errorf("heardOnAir(%s, %s) not news", h[0], h[1])
				}
				if rs.heardOnAir(h[1], h[0]) {
					t.Errorf("heardOnAir(%s, %s) news twice", h[1], h[0])
				}
			}
			got := rs.transmitters(testRoom, nil)
			if tc.except != "" {
				got = rs.relayTargets(testRoom, tc.except)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("transmitters (a relay from %q) = %v, want %v", tc.except, got, tc.want)
			}
		})
	}
}

// A radio side's status: coming online is reported once; a cleared record
// forgets the radio; the radio's own node is recognised as the bridge's.
func TestRadioSides(t *testing.T) {
	rs := newRadios()
	if rs.setStatus("!0000000a", topics.StatusRecord{State: topics.LinkOnline}) {
		t.Error("a status alone reported as a radio online")
	}
	if !rs.setRecord("!0000000a", topics.RadioRecord{Num: 10}) {
		t.Error("the record after an online status not reported as coming online")
	}
	if rs.setStatus("!0000000a", topics.StatusRecord{State: topics.LinkConnecting}) {
		t.Error("connecting reported as online")
	}
	if !rs.setStatus("!0000000a", topics.StatusRecord{State: topics.LinkOnline}) {
		t.Error("coming online not reported")
	}
	if rs.setStatus("!0000000a", topics.StatusRecord{State: topics.LinkOnline, AirtimeBlocked: true}) {
		t.Error("online again reported as coming online")
	}
	if id, ok := rs.isBridgeRadio(10); !ok || id != "!0000000a" {
		t.Errorf("isBridgeRadio(10) = %q, %v", id, ok)
	}
	if d := rs.describe(testRoom); !strings.HasPrefix(d, "Radio !0000000a is connected (its airtime share is spent") {
		t.Errorf("describe() = %q", d)
	}
	rs.forget("!0000000a")
	if _, ok := rs.isBridgeRadio(10); ok || rs.anyOnline() {
		t.Error("a forgotten radio is still known")
	}
	for _, bad := range []string{"", "!", "!123", "0000000a", "!0000000g", "!0000000a0"} {
		if n := nodeNum(bad); n != 0 {
			t.Errorf("nodeNum(%q) = %d", bad, n)
		}
	}
}

// Who posts a mesh text when several bridges hear it: the bridge of the
// mesh's elected radio; of two XMPP sides naming the same radio (one
// broker), the one whose occupant sorts first.
func TestDeferTo(t *testing.T) {
	rs := newRadios()
	rs.setStatus("!0000000b", topics.StatusRecord{State: topics.LinkOnline})
	rs.setRecord("!0000000b", topics.RadioRecord{Num: 0x0b, Mesh: "valley"})
	const self = "village@conference.example.org/meshbridge"
	if rs.deferTo("!0000000b", self) {
		t.Error("alone, this bridge defers")
	}
	// Another bridge, same mesh, a lower radio: it posts.
	rs.peerSays("village@conference.example.org/other", &radiosAdvert{Radios: []advertRadio{{ID: "!0000000a", Mesh: "valley"}}})
	if !rs.deferTo("!0000000b", self) {
		t.Error("this bridge does not defer to the elected radio's")
	}
	// It leaves: this one posts.
	rs.peerSays("village@conference.example.org/other", nil)
	if rs.deferTo("!0000000b", self) {
		t.Error("this bridge defers to a bridge that left")
	}
	// Another XMPP side names this bridge's own radio: the first occupant posts.
	rs.peerSays("village@conference.example.org/aaa", &radiosAdvert{Radios: []advertRadio{{ID: "!0000000b", Mesh: "valley"}}})
	if !rs.deferTo("!0000000b", self) {
		t.Error("this bridge does not defer to the XMPP side that sorts first")
	}
	if rs.deferTo("!0000000b", "village@conference.example.org/a") {
		t.Error("the XMPP side that sorts first defers")
	}
	// A radio on another mesh does not count.
	rs.peerSays("village@conference.example.org/aaa", &radiosAdvert{Radios: []advertRadio{{ID: "!00000001", Mesh: "hill"}}})
	if rs.deferTo("!0000000b", self) {
		t.Error("this bridge defers to a bridge on another mesh")
	}
}

// Another bridge counts in the room it is in, and only there; its word
// about which radios share a mesh goes when it leaves; a status alone (a
// will for a radio its side no longer uses) does not make a radio.
func TestPeersPerRoom(t *testing.T) {
	rs := newRadios()
	rs.setStatus("!0000000b", topics.StatusRecord{State: topics.LinkOnline})
	rs.setRecord("!0000000b", topics.RadioRecord{Num: 0x0b, Mesh: "valley"})
	rs.setStatus("!0000000c", topics.StatusRecord{State: topics.LinkDisconnected}) // a will, no record
	other := "farm@conference.example.org/bridge2"
	rs.peerSays(other, &radiosAdvert{Radios: []advertRadio{{ID: "!0000000a", Mesh: "valley", With: "!0000000d"}}})
	if got := rs.transmitters(testRoom, nil); !slices.Equal(got, []string{"!0000000b"}) {
		t.Errorf("in a room the other bridge is not in: transmitters = %v", got)
	}
	if got := rs.transmitters("farm@conference.example.org", nil); got != nil {
		t.Errorf("in the other bridge's room: transmitters = %v, want none (its radio is elected)", got)
	}
	if _, ok := rs.isBridgeRadio(0x0c); ok {
		t.Error("a radio known only from a status counts")
	}
	if m := rs.meshes(); len(m) != 1 || len(m[0]) != 2 {
		t.Errorf("meshes %v, want one of two radios (named alike; !0000000d is not known)", m)
	}
	rs.dropRoomPeers("farm@conference.example.org")
	if _, ok := rs.isBridgeRadio(0x0a); ok || len(rs.peerSaid) != 0 {
		t.Error("what a bridge said outlives its room")
	}
}

// Only the bridges the configuration names, by the real JID the room
// shows, are taken at their word: anyone else claiming radios (to silence
// a mesh user, or to cut the room off from a mesh) is ignored, and a
// trusted bridge that leaves is forgotten.
func TestOnlyTrustedBridgesCount(t *testing.T) {
	g := newTestGateway(t, func(c *Config) { c.PeerBridges = []jid.JID{jid.MustParse("bridge2@example.org")} })
	r := newRoom(g.cfg.Rooms[0], &g.cfg, g.log)
	claim := &radiosAdvert{Radios: []advertRadio{{ID: "!a1b2c3d4", Mesh: "valley"}}} // a mesh user's node
	presence := func(nick, realJID, typ string) *inPresence {
		from, _ := r.cfg.JID.WithResource(nick)
		return &inPresence{From: from, Type: typ, Radios: claim, X: &mucUserX{Items: []mucItem{{JID: realJID}}}}
	}
	for _, p := range []*inPresence{
		presence("mallory", "mallory@example.org/x", ""),
		presence("bridge2", "", ""), // the room hides real JIDs
		presence("meshbridge2", "bridge2@example.org.evil/x", ""),
	} {
		g.notePeer(r, p)
		if _, ok := g.radios.isBridgeRadio(0xa1b2c3d4); ok {
			t.Errorf("a claim from %s (real JID %q) was taken", p.From, p.X.Items[0].JID)
		}
	}
	g.notePeer(r, presence("meshbridge2", "bridge2@example.org/radio", ""))
	if _, ok := g.radios.isBridgeRadio(0xa1b2c3d4); !ok || !r.trusted[r.cfg.JID.String()+"/meshbridge2"] {
		t.Fatal("the trusted bridge's claim was not taken")
	}
	g.notePeer(r, presence("meshbridge2", "bridge2@example.org/radio", "unavailable"))
	if _, ok := g.radios.isBridgeRadio(0xa1b2c3d4); ok || len(r.trusted) != 0 {
		t.Error("a trusted bridge that left is still counted")
	}
}
