//go:build integration

package xmppgw_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"mellium.im/xmpp/jid"

	"github.com/jshiffer/lora-xmpp-bridge/internal/meshsim"
	"github.com/jshiffer/lora-xmpp-bridge/internal/spool"
	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
	"github.com/jshiffer/lora-xmpp-bridge/internal/xmpptest"
	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/xmppgw"
)

// The simulated mesh's nodes (meshsim.Demo).
const (
	ana  = 0xa1b2c3d4 // ANA, "Ana's T-Beam"
	mill = 0x0badcafe // MILL, "Mill Road Repeater"
	kofi = 0x13572468 // KOFI, "Kofi"
)

// dmRig is a bridge, a non-anonymous room alice is in (so the bridge sees
// her real JID), and alice available for one-to-one chat.
type dmRig struct {
	srv   *xmpptest.Server
	room  jid.JID
	alice *xmpptest.Client
	br    *bridge
	store *spool.Store
	to    string // the bridge's JID
}

func startDMRig(t *testing.T, tune func(*xmppgw.Config), opts ...xmpptest.Option) *dmRig {
	t.Helper()
	opts = append([]xmpptest.Option{xmpptest.WithPublicJIDs(), xmpptest.WithAccount("bridge", "bridge-pw"), xmpptest.WithAccount("alice", "alice-pw")}, opts...)
	srv := xmpptest.StartProsody(t, opts...)
	return startDMRigOn(t, srv, tune)
}

func startDMRigOn(t *testing.T, srv *xmpptest.Server, tune func(*xmppgw.Config)) *dmRig {
	t.Helper()
	ctx := context.Background()
	room := jid.MustParse("village@" + srv.MUCDomain)
	alice := xmpptest.Dial(t, srv, "alice", "alice-pw")
	if err := alice.Available(ctx); err != nil {
		t.Fatal(err)
	}
	if err := alice.Join(ctx, room.String(), "alice"); err != nil {
		t.Fatal(err)
	}
	store := openSpool(t)
	br := startBridge(t, srv, room, func(c *xmppgw.Config) {
		// Tests send more than a person would; TestDirectWhoMayWrite
		// checks the limit.
		c.Spool, c.StatusInterval, c.DMBurst = store, 500*time.Millisecond, 100
		if tune != nil {
			tune(c)
		}
	})
	// The bridge knows the mesh's nodes once its status counts them.
	alice.WaitPresence(t, wait, func(p xmpptest.Presence) bool {
		return p.Nick == "meshbridge" && strings.Contains(p.Status, "3 nodes heard")
	})
	return &dmRig{srv: srv, room: room, alice: alice, br: br, store: store, to: "bridge@" + srv.Domain}
}

// ackAll makes every node acknowledge the direct messages it gets.
func ackAll(*meshpb.MeshPacket) (meshpb.Routing_Error, bool) { return meshpb.Routing_NONE, true }

// dmsTo returns the texts the radio sent to node, and checks that each
// asked for an acknowledgement.
func dmsTo(t *testing.T, r *meshsim.Radio, node uint32) []string {
	t.Helper()
	var out []string
	for _, p := range r.Received() {
		if p.GetTo() != node {
			continue
		}
		if !p.GetWantAck() {
			t.Errorf("direct message %q to %s sent without want_ack", p.GetDecoded().GetPayload(), mesh.NodeID(node))
		}
		out = append(out, string(p.GetDecoded().GetPayload()))
	}
	return out
}

func waitDM(t *testing.T, r *meshsim.Radio, node uint32, text string) {
	t.Helper()
	testutil.Eventually(t, wait, func() bool {
		for _, s := range dmsTo(t, r, node) {
			if s == text {
				return true
			}
		}
		return false
	}, "no direct message %q to %s; the radio got %q", text, mesh.NodeID(node), received(r))
}

func (d *dmRig) send(t *testing.T, c *xmpptest.Client, body string) string {
	t.Helper()
	id, err := c.SendChat(context.Background(), d.to, body, true)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// replyTo waits for the bridge's one-to-one answer to c that contains all
// of parts.
func (d *dmRig) replyTo(t *testing.T, c *xmpptest.Client, parts ...string) xmpptest.Chat {
	t.Helper()
	return c.WaitChat(t, wait, func(m xmpptest.Chat) bool {
		if !strings.HasPrefix(m.From, d.to) || m.Body == "" {
			return false
		}
		for _, p := range parts {
			if !strings.Contains(m.Body, p) {
				return false
			}
		}
		return true
	})
}

// A room occupant writes to a node by its short name, its long name (in
// quotes, and without) and its id: each reaches that node as a direct
// message asking for an acknowledgement, and the node's acknowledgement
// comes back as a receipt on the message. A name the bridge does not know
// gets an answer that suggests names.
func TestDirectMessageToNode(t *testing.T) {
	d := startDMRig(t, nil)
	d.br.radio.SetAnswerDirect(ackAll)
	for _, tt := range []struct {
		body string
		node uint32
		text string
	}{
		{"@ANA see you at 6", ana, "alice: see you at 6"},
		{`@"Ana's T-Beam" hi`, ana, "alice: hi"},
		{"@Mill Road Repeater: is the road open?", mill, "alice: is the road open?"},
		{"@Kofi on my way", kofi, "alice: on my way"},
		{"@!0badcafe battery?", mill, "alice: battery?"},
	} {
		id := d.send(t, d.alice, tt.body)
		waitDM(t, d.br.radio, tt.node, tt.text)
		d.alice.WaitReceipt(t, wait, id)
	}
	// Without an address: to the node last written to.
	id := d.send(t, d.alice, "and the pump?")
	waitDM(t, d.br.radio, mill, "alice: and the pump?")
	d.alice.WaitReceipt(t, wait, id)

	d.send(t, d.alice, "@Beam hello")
	d.replyTo(t, d.alice, "no node called “Beam”", "Did you mean", "ANA (Ana's T-Beam, !a1b2c3d4)")
	d.send(t, d.alice, "@ZED hello")
	d.replyTo(t, d.alice, "no node called “ZED”", "@ANA see you at 6")
	if n := len(d.br.radio.Received()); n != 6 {
		t.Errorf("the radio got %d packets, want 6: %q", n, received(d.br.radio))
	}
	// Nothing of it reached the room.
	for _, m := range d.alice.Messages() {
		if strings.Contains(m.Body, "see you at 6") {
			t.Errorf("a direct message reached the room: %q", m.Body)
		}
	}
}

// A node that refuses a direct message (the radio gives up on it) or does
// not acknowledge it in time: its sender is told why, and gets no receipt.
func TestDirectMessageNotDelivered(t *testing.T) {
	d := startDMRig(t, func(c *xmppgw.Config) { c.DMAckTimeout = 3 * time.Second })
	d.br.radio.SetAnswerDirect(func(p *meshpb.MeshPacket) (meshpb.Routing_Error, bool) {
		switch p.GetTo() {
		case mill:
			return meshpb.Routing_MAX_RETRANSMIT, true
		case kofi:
			return 0, false // the mesh never answers
		}
		return meshpb.Routing_NONE, true
	})
	nak := d.send(t, d.alice, "@MILL are you there?")
	d.replyTo(t, d.alice, "⚠ Not delivered to MILL", "“are you there?”", "switched off or out of range")
	silent := d.send(t, d.alice, "@KOFI hello?")
	d.replyTo(t, d.alice, "⚠ Not delivered to KOFI", "no acknowledgement from KOFI within 3s")
	// A relay heard repeating the message (the radio's implicit
	// acknowledgement) is not the node's word.
	relayed := d.send(t, d.alice, "@KOFI are you near the bridge?")
	waitDM(t, d.br.radio, kofi, "alice: are you near the bridge?")
	sent := d.br.radio.Received()
	d.br.radio.Inject(d.br.radio.RoutingPacket(d.br.radio.Config().NodeNum, sent[len(sent)-1].GetId(), meshpb.Routing_NONE))
	d.replyTo(t, d.alice, "⚠ Not delivered to KOFI", "“are you near the bridge?”", "no acknowledgement")
	ok := d.send(t, d.alice, "@ANA and you?")
	d.alice.WaitReceipt(t, wait, ok)
	for _, m := range d.alice.Chats() {
		if m.ReceiptFor == nak || m.ReceiptFor == silent || m.ReceiptFor == relayed {
			t.Errorf("a receipt for a message that was not delivered: %+v", m)
		}
	}
}

// What a node answers comes back to the person who wrote to it, not to the
// room, also after a restart of the XMPP side; a node nobody wrote to
// reaches --dm-jid.
func TestDirectRepliesComeBack(t *testing.T) {
	ctx := context.Background()
	d := startDMRig(t, func(c *xmppgw.Config) { c.DMJID = jid.MustParse("carol@localhost") }, xmpptest.WithAccount("carol", "carol-pw"))
	carol := xmpptest.Dial(t, d.srv, "carol", "carol-pw")
	if err := carol.Available(ctx); err != nil {
		t.Fatal(err)
	}
	d.br.radio.SetAnswerDirect(ackAll)
	d.alice.WaitReceipt(t, wait, d.send(t, d.alice, "@ANA are you home?"))

	d.br.radio.Inject(d.br.radio.DirectTextPacket(ana, "yes, come over"))
	d.alice.WaitChat(t, wait, func(m xmpptest.Chat) bool { return m.Body == "Ana's T-Beam: yes, come over" })
	d.br.radio.Inject(d.br.radio.DirectTextPacket(kofi, "anyone there?"))
	carol.WaitChat(t, wait, func(m xmpptest.Chat) bool { return m.Body == "Kofi: anyone there?" })

	// The XMPP side restarts: who talked to whom is kept.
	d.br.stopXMPP(t)
	restarted := time.Now()
	d.br.startXMPP(t)
	d.alice.WaitPresence(t, wait, func(p xmpptest.Presence) bool {
		return p.Nick == "meshbridge" && p.Type == "" && p.Received.After(restarted)
	})
	d.br.radio.Inject(d.br.radio.DirectTextPacket(ana, "still there?"))
	d.alice.WaitChat(t, wait, func(m xmpptest.Chat) bool { return m.Body == "Ana's T-Beam: still there?" })
	// An answer without an address goes to the node that wrote last.
	d.alice.WaitReceipt(t, wait, d.send(t, d.alice, "on my way"))
	waitDM(t, d.br.radio, ana, "alice: on my way")

	for _, m := range d.alice.Messages() {
		if strings.Contains(m.Body, "come over") || strings.Contains(m.Body, "anyone there") {
			t.Errorf("a direct message reached the room: %q", m.Body)
		}
	}
	for _, m := range carol.Chats() {
		if strings.Contains(m.Body, "Ana's T-Beam") {
			t.Errorf("carol got what Ana wrote to alice: %q", m.Body)
		}
	}
}

// Only the room's occupants (by the real JID the room shows) and the
// accounts in --dm-allow may write to nodes; others are told why, politely.
// Each person gets a few messages in a row, then one in a while.
func TestDirectWhoMayWrite(t *testing.T) {
	ctx := context.Background()
	d := startDMRig(t, func(c *xmppgw.Config) {
		c.DMAllow = []jid.JID{jid.MustParse("dave@localhost")}
		c.DMBurst, c.DMInterval = 2, time.Hour
	}, xmpptest.WithAccount("bob", "bob-pw"), xmpptest.WithAccount("dave", "dave-pw"))
	d.br.radio.SetAnswerDirect(ackAll)
	bob := xmpptest.Dial(t, d.srv, "bob", "bob-pw")
	dave := xmpptest.Dial(t, d.srv, "dave", "dave-pw")
	for _, c := range []*xmpptest.Client{bob, dave} {
		if err := c.Available(ctx); err != nil {
			t.Fatal(err)
		}
	}
	d.send(t, bob, "@ANA let me in")
	d.replyTo(t, bob, "Sorry", "only for the people in village@conference.localhost", "Join it", "--dm-allow")
	dave.WaitReceipt(t, wait, d.send(t, dave, "@ANA hello from dave"))
	waitDM(t, d.br.radio, ana, "dave: hello from dave")

	d.alice.WaitReceipt(t, wait, d.send(t, d.alice, "@ANA one"))
	d.alice.WaitReceipt(t, wait, d.send(t, d.alice, "@ANA two"))
	d.send(t, d.alice, "@ANA three")
	d.replyTo(t, d.alice, "⏳ Not sent", "at most 2 direct messages in a row")
	// A mistyped name costs no turn, and others are not held back.
	d.send(t, d.alice, "@ZED four")
	d.replyTo(t, d.alice, "no node called “ZED”")
	dave.WaitReceipt(t, wait, d.send(t, dave, "@ANA dave again"))
	for _, s := range dmsTo(t, d.br.radio, ana) {
		if strings.Contains(s, "let me in") || strings.Contains(s, "three") {
			t.Errorf("sent to the mesh: %q", s)
		}
	}
}

// In a room that does not show its occupants' real JIDs, the bridge cannot
// tell who is in it, and says so.
func TestDirectAnonymousRoom(t *testing.T) {
	srv := xmpptest.StartProsody(t, xmpptest.WithAccount("bridge", "bridge-pw"), xmpptest.WithAccount("alice", "alice-pw"))
	d := startDMRigOn(t, srv, nil)
	d.send(t, d.alice, "@ANA hi")
	d.replyTo(t, d.alice, "Sorry", "does not show me its occupants' addresses", "--dm-allow")
	if n := len(d.br.radio.Received()); n != 0 {
		t.Errorf("the radio got %q", received(d.br.radio))
	}
}

// !nodes and !help in the room are answered there and never reach the mesh.
func TestCommandsInTheRoom(t *testing.T) {
	d := startDMRig(t, nil)
	ctx := context.Background()
	// A packet heard from ANA says how far it is and how well heard.
	meshToRoom(t, d.br, d.alice, "morning")
	if _, err := d.alice.Say(ctx, d.room.String(), "!nodes"); err != nil {
		t.Fatal(err)
	}
	m := d.alice.WaitMessage(t, wait, func(m xmpptest.Message) bool {
		return m.Nick == "meshbridge" && strings.HasPrefix(m.Body, "Nodes heard in the last 24 hours (3)")
	})
	for _, want := range []string{"ANA · Ana's T-Beam · !a1b2c3d4 — just now, 1 hop, SNR 5.5 dB", "MILL · Mill Road Repeater · !0badcafe — ", "KOFI · Kofi · !13572468 — "} {
		if !strings.Contains(m.Body, want) {
			t.Errorf("!nodes answered %q, without %q", m.Body, want)
		}
	}
	if lines := strings.Count(m.Body, "\n"); lines != 3 {
		t.Errorf("!nodes answered %d lines", lines+1)
	}
	if _, err := d.alice.Say(ctx, d.room.String(), "!help"); err != nil {
		t.Fatal(err)
	}
	d.alice.WaitMessage(t, wait, func(m xmpptest.Message) bool {
		return m.Nick == "meshbridge" && strings.Contains(m.Body, "!nodes") && strings.Contains(m.Body, "!status") && strings.Contains(m.Body, "message bridge@localhost directly: @ANA")
	})
	// In a one-to-one chat too.
	d.send(t, d.alice, "!nodes")
	d.replyTo(t, d.alice, "Nodes heard in the last 24 hours (3)", "KOFI · Kofi")
	if n := len(d.br.radio.Received()); n != 0 {
		t.Errorf("commands reached the mesh: %q", received(d.br.radio))
	}
}

// A node's !nodes, !who and !help to the bridge's radio are answered on the
// mesh, to that node, in one or two packets.
func TestCommandsFromTheMesh(t *testing.T) {
	d := startDMRig(t, nil)
	for _, tt := range []struct{ cmd, want string }{
		{"!nodes", "Heard in 1h (2): MILL "},
		{"!nodes", ", KOFI "},
		{"!who", "village (1): alice"},
		{"!help", "!who people in the chat room"},
	} {
		before := len(dmsTo(t, d.br.radio, ana))
		d.br.radio.Inject(d.br.radio.DirectTextPacket(ana, tt.cmd))
		testutil.Eventually(t, wait, func() bool { return len(dmsTo(t, d.br.radio, ana)) > before }, "%s not answered", tt.cmd)
		got := dmsTo(t, d.br.radio, ana)[before:]
		if len(got) > 2 || !strings.Contains(strings.Join(got, ""), tt.want) {
			t.Errorf("%s answered %q, want %q in at most two packets", tt.cmd, got, tt.want)
		}
		for _, p := range got {
			if len(p) > 200 {
				t.Errorf("%s: a packet of %d bytes", tt.cmd, len(p))
			}
		}
	}
	for _, m := range d.alice.Chats() {
		if strings.Contains(m.Body, "!nodes") || strings.Contains(m.Body, "!who") {
			t.Errorf("a command reached XMPP: %q", m.Body)
		}
	}
}

// The bridge's presence in the room says how its radio is and how many
// nodes were heard in the last hour, in the same presence as its radios,
// and changes at most once every StatusInterval.
func TestPresenceStatus(t *testing.T) {
	d := startDMRig(t, func(c *xmppgw.Config) { c.StatusInterval = 2 * time.Second })
	p := d.alice.WaitPresence(t, wait, func(p xmpptest.Presence) bool {
		return p.Nick == "meshbridge" && p.Status == "📡 Radio online · 3 nodes heard in the last hour"
	})
	if !strings.Contains(p.Payload, "urn:sovereign-relay:radios:0") || !strings.Contains(p.Payload, "!5eed0001") {
		t.Errorf("the status came without the radios: %s", p.Payload)
	}
	d.br.radio.Inject(d.br.radio.TextPacket(0x77777777, "new here"))
	four := d.alice.WaitPresence(t, wait, func(p xmpptest.Presence) bool {
		return p.Nick == "meshbridge" && strings.Contains(p.Status, "4 nodes heard in the last hour")
	})
	d.br.radio.Inject(d.br.radio.TextPacket(0x88888888, "me too"))
	five := d.alice.WaitPresence(t, wait, func(p xmpptest.Presence) bool {
		return p.Nick == "meshbridge" && strings.Contains(p.Status, "5 nodes heard in the last hour")
	})
	if gap := five.Received.Sub(four.Received); gap < 1900*time.Millisecond {
		t.Errorf("the status changed twice within %v", gap)
	}
	for _, p := range d.alice.Presences() {
		if p.Nick == "meshbridge" && p.Type == "" && !strings.Contains(p.Payload, "urn:sovereign-relay:radios:0") {
			t.Errorf("a presence without the radios: %+v", p)
		}
	}
}

// The happy path against ejabberd: an account in --dm-allow writes to a
// node, gets the receipt, and the node's answer.
func TestDirectEjabberd(t *testing.T) {
	srv := xmpptest.StartEjabberd(t, xmpptest.WithAccount("bridge", "bridge-pw"), xmpptest.WithAccount("alice", "alice-pw"))
	d := startDMRigOn(t, srv, func(c *xmppgw.Config) { c.DMAllow = []jid.JID{jid.MustParse("alice@" + srv.Domain)} })
	d.br.radio.SetAnswerDirect(ackAll)
	d.alice.WaitReceipt(t, wait, d.send(t, d.alice, "@ANA hello from ejabberd"))
	waitDM(t, d.br.radio, ana, "alice: hello from ejabberd")
	d.br.radio.Inject(d.br.radio.DirectTextPacket(ana, "hello back"))
	d.alice.WaitChat(t, wait, func(m xmpptest.Chat) bool { return m.Body == "Ana's T-Beam: hello back" })
}
