package xmppgw

import (
	"slices"
	"strings"
	"testing"

	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

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
			if got := rs.transmitters(tc.except); !slices.Equal(got, tc.want) {
				t.Errorf("transmitters(%q) = %v, want %v", tc.except, got, tc.want)
			}
		})
	}
}

// A radio side's status: coming online is reported once; a cleared record
// forgets the radio; the radio's own node is recognised as the bridge's.
func TestRadioSides(t *testing.T) {
	rs := newRadios()
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
	if d := rs.describe(); !strings.HasPrefix(d, "Radio !0000000a is connected (its airtime share is spent") {
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
