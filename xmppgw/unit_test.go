package xmppgw

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"mellium.im/xmpp/jid"

	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
)

func testConfig() Config {
	return Config{
		JID: jid.MustParse("bridge@example.org"), Password: "pw",
		Rooms: []Room{{JID: jid.MustParse("village@conference.example.org"), Nick: "meshbridge"}},
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr string
	}{
		{"ok", func(*Config) {}, ""},
		{"no localpart", func(c *Config) { c.JID = jid.MustParse("example.org") }, "user@domain"},
		{"no password", func(c *Config) { c.Password = "" }, "password"},
		{"bad server", func(c *Config) { c.Server = "example.org" }, "host:port"},
		{"no rooms", func(c *Config) { c.Rooms = nil }, "no room"},
		{"room with resource", func(c *Config) { c.Rooms[0].JID = jid.MustParse("v@c.example.org/nick") }, "bare room"},
		{"no nick", func(c *Config) { c.Rooms[0].Nick = "" }, "no nick"},
		{"channel twice", func(c *Config) { c.Rooms = append(c.Rooms, Room{JID: jid.MustParse("b@c.example.org"), Nick: "n"}) }, "two rooms"},
		{"format without text", func(c *Config) { c.Format = "{name}" }, "{text}"},
	}
	for _, tt := range tests {
		c := testConfig()
		tt.edit(&c)
		c.Defaults()
		err := c.Validate()
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.wantErr)
		}
	}
}

type nopBus struct{}

func (nopBus) Publish(string, []byte, bool) error { return nil }
func (nopBus) Subscribe(string, func(string, []byte)) (func(), error) {
	return func() {}, nil
}

func newTestGateway(t *testing.T, edit func(*Config)) *Gateway {
	c := testConfig()
	if edit != nil {
		edit(&c)
	}
	g, err := New(c, nopBus{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestFormat(t *testing.T) {
	g := newTestGateway(t, func(c *Config) { c.Format = "[{short}] {name} on {channel} ({id}): {text}" })
	g.onNode("", []byte(`{"id":"!a1b2c3d4","long_name":"Ana's T-Beam","short_name":"ANA"}`))
	g.onNode("", []byte(`{"id":"!00000002","short_name":"B"}`))
	tests := []struct{ from, want string }{
		{"!a1b2c3d4", "[ANA] Ana's T-Beam on LongFast (!a1b2c3d4): hi"},
		{"!00000002", "[B] B on LongFast (!00000002): hi"},
		{"!0000dead", "[] !0000dead on LongFast (!0000dead): hi"}, // unknown senders still get through
	}
	for _, tt := range tests {
		if got := g.format(tt.from, "LongFast", "hi"); got != tt.want {
			t.Errorf("format(%s) = %q, want %q", tt.from, got, tt.want)
		}
	}
}

func rx(from, to, id uint32, text string, emoji bool) []byte {
	d := &meshpb.Data{Portnum: meshpb.PortNum_TEXT_MESSAGE_APP, Payload: []byte(text)}
	if emoji {
		d.Emoji = 1
	}
	b, _ := proto.Marshal(&meshpb.ServiceEnvelope{ChannelId: "LongFast", GatewayId: "!5eed0001",
		Packet: &meshpb.MeshPacket{From: from, To: to, Id: id, PayloadVariant: &meshpb.MeshPacket_Decoded{Decoded: d}}})
	return b
}

func TestMeshRXRouting(t *testing.T) {
	g := newTestGateway(t, nil)
	g.onMeshRX("", rx(0xa1b2c3d4, mesh.Broadcast, 42, "🙂", false)) // emoji-only, unknown sender: still bridged
	g.onMeshRX("", rx(0xa1b2c3d4, 0x5eed0001, 43, "psst", false))  // DM to our radio, no DM JID: not bridged
	g.onMeshRX("", rx(0xa1b2c3d4, 0x0badcafe, 44, "not ours", false))
	g.onMeshRX("", rx(0xa1b2c3d4, mesh.Broadcast, 45, "👍", true))
	var got []outbound
	for len(g.toRoom) > 0 {
		got = append(got, <-g.toRoom)
	}
	if len(got) != 2 || got[0].body != "!a1b2c3d4: 🙂" || got[0].id != "mesh-a1b2c3d4-0000002a" || got[1].body != "!a1b2c3d4: reacted 👍" {
		t.Errorf("queued %+v", got)
	}

	g = newTestGateway(t, func(c *Config) { c.DMJID = jid.MustParse("operator@example.org") })
	g.onMeshRX("", rx(0xa1b2c3d4, 0x5eed0001, 43, "psst", false))
	if o := <-g.toRoom; !o.dm || o.body != "!a1b2c3d4: psst" {
		t.Errorf("DM queued as %+v", o)
	}
}

func TestIsCommand(t *testing.T) {
	for s, want := range map[string]bool{"status": true, "status now": true, "!!": false, "": false, "Hello": false, " x": false, "wow!": false} {
		if got := isCommand(s); got != want {
			t.Errorf("isCommand(%q) = %v", s, got)
		}
	}
}

// What the bridge does when the room removes it, by status code.
func TestRemovedFromRoom(t *testing.T) {
	occupant := jid.MustParse("village@conference.example.org/meshbridge")
	self := func(codes ...int) *inPresence {
		p := &inPresence{From: occupant, Type: "unavailable", X: &mucUserX{}}
		for _, c := range codes {
			p.X.Statuses = append(p.X.Statuses, struct {
				Code int `xml:"code,attr"`
			}{c})
		}
		return p
	}
	destroyed := self()
	destroyed.X.Destroy = &struct {
		Reason string `xml:"reason"`
	}{"moving on"}
	tests := []struct {
		name       string
		p          *inPresence
		wantGone   bool
		wantRejoin bool
	}{
		{"kicked", self(statusSelf, statusKicked), false, true},
		{"technical kick", self(statusSelf, statusTechnicalKick), false, true},
		{"service shutdown", self(statusSelf, statusShutdown), false, true},
		{"kicked without 110 (older servers)", self(statusKicked), false, true},
		{"banned", self(statusSelf, statusBanned), true, false},
		{"destroyed without 110 (ejabberd)", destroyed, true, false},
	}
	g := newTestGateway(t, nil)
	for _, tt := range tests {
		r := &room{cfg: g.cfg.Rooms[0], nick: "meshbridge", occupant: occupant, joined: true}
		if err := g.onRoomPresence(context.Background(), nil, r, tt.p); err != nil {
			t.Fatal(err)
		}
		if r.joined || r.gone != tt.wantGone || (!r.rejoinAt.IsZero()) != tt.wantRejoin {
			t.Errorf("%s: joined %v gone %v rejoin %v", tt.name, r.joined, r.gone, !r.rejoinAt.IsZero())
		}
	}
	// Another occupant leaving changes nothing.
	r := &room{cfg: g.cfg.Rooms[0], nick: "meshbridge", occupant: occupant, joined: true}
	other := self(statusKicked)
	other.From = jid.MustParse("village@conference.example.org/alice")
	g.onRoomPresence(context.Background(), nil, r, other)
	if !r.joined {
		t.Error("another occupant's kick made the bridge leave")
	}
}
