//go:build integration

package xmppgw_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"mellium.im/xmpp/jid"

	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
	"github.com/jshiffer/lora-xmpp-bridge/internal/xmpptest"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/serialgw"
	"github.com/jshiffer/lora-xmpp-bridge/xmppgw"
)

// Mesh nodes of the simulated radio (meshsim.Demo).
const (
	nodeAna  = 0xa1b2c3d4
	nodeKofi = 0x13572468
	nodeMill = 0x0badcafe
)

// relMeshSays has a mesh node say text and waits until alice sees it in the
// room; it returns the room message and the packet's id.
func relMeshSays(t *testing.T, br *bridge, alice *xmpptest.Client, from uint32, text string) (xmpptest.Message, uint32) {
	t.Helper()
	p := br.radio.TextPacket(from, text)
	br.radio.Inject(p)
	m := alice.WaitMessage(t, wait, func(m xmpptest.Message) bool { return strings.HasSuffix(m.Body, ": "+text) })
	if m.StanzaID == "" {
		t.Fatalf("the room gave no stanza-id to %+v", m)
	}
	return m, p.GetId()
}

// relReady waits until a mesh text reaches alice: the bridge is in the
// room, and knows the radio (its records come before its packets), so
// what alice says from then on goes to the radio.
func relReady(t *testing.T, br *bridge, alice *xmpptest.Client) {
	t.Helper()
	relMeshSays(t, br, alice, nodeMill, "ready")
}

// relSays has alice say body in the room and returns the room's reflection.
func relSays(t *testing.T, c *xmpptest.Client, room jid.JID, body string) xmpptest.Message {
	t.Helper()
	id, err := c.Say(context.Background(), room.String(), body)
	if err != nil {
		t.Fatal(err)
	}
	return c.WaitMessage(t, wait, func(m xmpptest.Message) bool { return m.OriginID == id && m.StanzaID != "" })
}

// relPacket waits until the radio has taken a packet that match accepts.
func relPacket(t *testing.T, br *bridge, what string, match func(*meshpb.MeshPacket) bool) *meshpb.MeshPacket {
	t.Helper()
	var found *meshpb.MeshPacket
	testutil.Eventually(t, wait, func() bool {
		i := slices.IndexFunc(br.radio.Received(), match)
		if i >= 0 {
			found = br.radio.Received()[i]
		}
		return i >= 0
	}, "the radio never took %s; it took %q", what, received(br.radio))
	return found
}

func relText(s string) func(*meshpb.MeshPacket) bool {
	return func(p *meshpb.MeshPacket) bool { return string(p.GetDecoded().GetPayload()) == s }
}

func relTapback(emoji string) func(*meshpb.MeshPacket) bool {
	return func(p *meshpb.MeshPacket) bool {
		return p.GetDecoded().GetEmoji() != 0 && string(p.GetDecoded().GetPayload()) == emoji
	}
}

// A mesh tapback becomes a XEP-0444 reaction of the bridge on the room
// message that carried the packet, or that went to the mesh as it (any
// part); tapbacks from several nodes make one set; a tapback on a packet
// the bridge does not know is said in words, naming who reacted.
func TestMeshTapbackToRoom(t *testing.T) {
	srv, room, alice := startRoom(t)
	testTapbacks(t, startBridge(t, srv, room, nil), alice, room)
}

func testTapbacks(t *testing.T, br *bridge, alice *xmpptest.Client, room jid.JID) {
	m, pid := relMeshSays(t, br, alice, nodeAna, "Water pump is running again")
	br.radio.Inject(br.radio.TapbackPacket(nodeKofi, pid, "👍"))
	r := alice.WaitReaction(t, wait, m.StanzaID, "👍")
	if r.Nick != "meshbridge" || r.Body != "" || !r.Stored {
		t.Errorf("reaction %+v: want one of the bridge, without a body, stored", r)
	}
	br.radio.Inject(br.radio.TapbackPacket(nodeMill, pid, "❤️"))
	r = alice.WaitReaction(t, wait, m.StanzaID, "❤️")
	if !slices.Equal(r.Reactions, []string{"👍", "❤️"}) {
		t.Errorf("the bridge's reactions are %q; a reaction replaces the set, so both must be in it", r.Reactions)
	}

	// On a room message, by the packet id of its second part.
	long := relSays(t, alice, room, strings.Repeat("The ford is passable today but bring boots. ", 6))
	second := relPacket(t, br, "the second part", func(p *meshpb.MeshPacket) bool {
		return strings.HasPrefix(string(p.GetDecoded().GetPayload()), "alice (2/")
	})
	br.radio.Inject(br.radio.TapbackPacket(nodeAna, second.GetId(), "🙏"))
	alice.WaitReaction(t, wait, long.StanzaID, "🙏")

	// Unknown: said in words, with who reacted.
	br.radio.Inject(br.radio.TapbackPacket(nodeKofi, 0x0badf00d, "😂"))
	alice.WaitMessage(t, wait, func(m xmpptest.Message) bool { return m.Body == "Kofi: reacted 😂 to an earlier message" })
}

// A reaction in the room on a message that came from the mesh, or went to
// it, becomes a tapback on its packet (the first part's); one on a message
// the mesh never had is not sent; a reaction taken back sends nothing, and
// an emoji already sent for a message is not sent again.
func TestRoomReactionToMesh(t *testing.T) {
	srv, room, alice := startRoom(t)
	testRoomReactions(t, startBridge(t, srv, room, nil), alice, room)
}

func testRoomReactions(t *testing.T, br *bridge, alice *xmpptest.Client, room jid.JID) {
	ctx := context.Background()
	m, pid := relMeshSays(t, br, alice, nodeAna, "Anyone heading to the market?")
	if _, err := alice.React(ctx, room.String(), m.StanzaID, "👍"); err != nil {
		t.Fatal(err)
	}
	p := relPacket(t, br, "the tapback", relTapback("👍"))
	if p.GetDecoded().GetReplyId() != pid || p.GetDecoded().GetEmoji() != 1 || p.GetDecoded().GetPortnum() != meshpb.PortNum_TEXT_MESSAGE_APP {
		t.Errorf("tapback %v: want reply_id %d", p.GetDecoded(), pid)
	}

	long := relSays(t, alice, room, strings.Repeat("Meeting at the school at six, bring a torch. ", 6))
	first := relPacket(t, br, "the first part", func(p *meshpb.MeshPacket) bool {
		return strings.HasPrefix(string(p.GetDecoded().GetPayload()), "alice (1/")
	})
	// Unknown, taken back, already sent: nothing reaches the mesh; then a
	// tapback that does shows they were passed over.
	if _, err := alice.React(ctx, room.String(), "no-such-message", "🙃"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.React(ctx, room.String(), m.StanzaID); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.React(ctx, room.String(), m.StanzaID, "👍"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.React(ctx, room.String(), long.StanzaID, "🎉"); err != nil {
		t.Fatal(err)
	}
	p = relPacket(t, br, "the tapback on the long message", relTapback("🎉"))
	if p.GetDecoded().GetReplyId() != first.GetId() {
		t.Errorf("tapback on a message in parts names %d, want the first part's %d", p.GetDecoded().GetReplyId(), first.GetId())
	}
	n := 0
	for _, p := range br.radio.Received() {
		if p.GetDecoded().GetEmoji() != 0 {
			n++
		}
	}
	if n != 2 || slices.ContainsFunc(br.radio.Received(), relTapback("🙃")) {
		t.Errorf("radio took %d tapbacks (%q), want 2", n, received(br.radio))
	}
}

// A mesh reply becomes a XEP-0461 reply to the room message it names, with
// a XEP-0428 fallback quote; a reply to an unknown packet is posted as a
// plain text.
func TestMeshReplyToRoom(t *testing.T) {
	srv, room, alice := startRoom(t)
	testMeshReplies(t, startBridge(t, srv, room, nil), alice, room)
}

func testMeshReplies(t *testing.T, br *bridge, alice *xmpptest.Client, room jid.JID) {
	m, pid := relMeshSays(t, br, alice, nodeAna, "Who has the key to the shed?")
	br.radio.Inject(br.radio.ReplyPacket(nodeKofi, pid, "I do"))
	r := alice.WaitMessage(t, wait, func(m xmpptest.Message) bool { return strings.HasSuffix(m.Body, "Kofi: I do") })
	if r.ReplyID != m.StanzaID || r.ReplyTo != room.String()+"/meshbridge" ||
		r.ReplyFallback != "> Ana's T-Beam: Who has the key to the shed?\n" || r.Body != r.ReplyFallback+"Kofi: I do" {
		t.Errorf("reply %+v: want a reply to %s with the quote as fallback", r, m.StanzaID)
	}

	// To a room message, by its packet id on the mesh.
	q := relSays(t, alice, room, "Is the ford passable?")
	sent := relPacket(t, br, "alice's question", relText("alice: Is the ford passable?"))
	br.radio.Inject(br.radio.ReplyPacket(nodeKofi, sent.GetId(), "Yes, with boots"))
	r = alice.WaitMessage(t, wait, func(m xmpptest.Message) bool { return strings.HasSuffix(m.Body, "Kofi: Yes, with boots") })
	if r.ReplyID != q.StanzaID || r.ReplyTo != room.String()+"/alice" || r.ReplyFallback != "> alice: Is the ford passable?\n" {
		t.Errorf("reply %+v: want a reply to alice's %s", r, q.StanzaID)
	}

	br.radio.Inject(br.radio.ReplyPacket(nodeKofi, 0x0badf00d, "What was that?"))
	r = alice.WaitMessage(t, wait, func(m xmpptest.Message) bool { return strings.HasSuffix(m.Body, "What was that?") })
	if r.Body != "Kofi: What was that?" || r.ReplyID != "" || r.ReplyFallback != "" {
		t.Errorf("reply to an unknown packet posted as %+v", r)
	}
}

// A XEP-0461 reply in the room goes to the mesh without the quote the
// client put in, naming the packet it replies to; a reply to a message
// the mesh never had goes as a plain text.
func TestRoomReplyToMesh(t *testing.T) {
	srv, room, alice := startRoom(t)
	testRoomReplies(t, startBridge(t, srv, room, nil), alice, room)
}

func testRoomReplies(t *testing.T, br *bridge, alice *xmpptest.Client, room jid.JID) {
	ctx := context.Background()
	m, pid := relMeshSays(t, br, alice, nodeAna, "Solar panel cleaned")
	if _, err := alice.Reply(ctx, room.String(), m.From, m.StanzaID, m.Body, "Thanks Ana"); err != nil {
		t.Fatal(err)
	}
	p := relPacket(t, br, "the reply", relText("alice: Thanks Ana"))
	if p.GetDecoded().GetReplyId() != pid || p.GetDecoded().GetEmoji() != 0 {
		t.Errorf("reply sent as %v, want reply_id %d", p.GetDecoded(), pid)
	}

	// A reply to a reply of alice's own message names its first part.
	q := relSays(t, alice, room, "Bridge open?")
	first := relPacket(t, br, "alice's question", relText("alice: Bridge open?"))
	// Replied to once the bridge knows what packet the question went as.
	testutil.Eventually(t, wait, func() bool { return br.xmpp.KnowsPacket(first.GetId()) }, "the bridge never learnt the question's packet id")
	if _, err := alice.Reply(ctx, room.String(), q.From, q.StanzaID, q.Body, "(answering myself) yes"); err != nil {
		t.Fatal(err)
	}
	if p := relPacket(t, br, "the second reply", relText("alice: (answering myself) yes")); p.GetDecoded().GetReplyId() != first.GetId() {
		t.Errorf("reply to a room message names %d, want %d", p.GetDecoded().GetReplyId(), first.GetId())
	}

	if _, err := alice.Reply(ctx, room.String(), room.String()+"/bob", "no-such-message", "old news", "Agreed"); err != nil {
		t.Fatal(err)
	}
	if p := relPacket(t, br, "the reply to nothing known", relText("alice: Agreed")); p.GetDecoded().GetReplyId() != 0 {
		t.Errorf("reply to an unknown message names packet %d", p.GetDecoded().GetReplyId())
	}
}

// The packet ids behind the room's messages survive a restart of the XMPP
// gateway: a tapback, a reaction and replies after it still find theirs.
func TestRelationsSurviveRestart(t *testing.T) {
	srv, room, alice := startRoom(t)
	ctx := context.Background()
	store := openSpool(t)
	br := startBridge(t, srv, room, func(c *xmppgw.Config) { c.Spool = store })
	m, pid := relMeshSays(t, br, alice, nodeAna, "Good morning from the ridge")
	q := relSays(t, alice, room, "Morning! Rain later?")
	sent := relPacket(t, br, "alice's message", relText("alice: Morning! Rain later?"))

	br.stopXMPP(t)
	br.startXMPP(t)
	relMeshSays(t, br, alice, nodeMill, "the bridge is back") // and in the room again

	br.radio.Inject(br.radio.TapbackPacket(nodeKofi, pid, "👍"))
	alice.WaitReaction(t, wait, m.StanzaID, "👍")
	br.radio.Inject(br.radio.ReplyPacket(nodeKofi, sent.GetId(), "No rain today"))
	r := alice.WaitMessage(t, wait, func(m xmpptest.Message) bool { return strings.HasSuffix(m.Body, "Kofi: No rain today") })
	if r.ReplyID != q.StanzaID {
		t.Errorf("after a restart the mesh reply names %q, want %q", r.ReplyID, q.StanzaID)
	}
	if _, err := alice.React(ctx, room.String(), q.StanzaID, "☔"); err != nil {
		t.Fatal(err)
	}
	if p := relPacket(t, br, "the tapback", relTapback("☔")); p.GetDecoded().GetReplyId() != sent.GetId() {
		t.Errorf("after a restart the tapback names %d, want %d", p.GetDecoded().GetReplyId(), sent.GetId())
	}
}

// slowRadio paces texts far apart, so that what follows a first message
// waits in the radio side's queue long enough to be corrected or taken
// back there.
func slowRadio(c *serialgw.Config) { c.TextInterval = 6 * time.Second }

// A correction of a message still queued for the radio replaces it there:
// the mesh gets only the corrected text. A correction of one already sent
// goes out once as "nick (edit): ..."; a second is not sent, and the room
// is told. Someone else's correction is ignored.
func TestCorrections(t *testing.T) {
	srv, room, alice := startRoom(t)
	testCorrections(t, startBridge(t, srv, room, nil, slowRadio), alice, room)
}

func testCorrections(t *testing.T, br *bridge, alice *xmpptest.Client, room jid.JID) {
	ctx := context.Background()
	relReady(t, br, alice)
	first := relSays(t, alice, room, "Market opens at 8")
	relPacket(t, br, "the first message", relText("alice: Market opens at 8"))
	queued := relSays(t, alice, room, "Bring bags for the potatos")
	if _, err := alice.Correct(ctx, room.String(), queued.OriginID, "Bring bags for the potatoes"); err != nil {
		t.Fatal(err)
	}
	relPacket(t, br, "the corrected message", relText("alice: Bring bags for the potatoes"))
	if slices.ContainsFunc(br.radio.Received(), relText("alice: Bring bags for the potatos")) {
		t.Errorf("the queued original went out too: %q", received(br.radio))
	}

	if _, err := alice.Correct(ctx, room.String(), first.OriginID, "Market opens at 9"); err != nil {
		t.Fatal(err)
	}
	relPacket(t, br, "the edit", relText("alice (edit): Market opens at 9"))
	if _, err := alice.Correct(ctx, room.String(), first.OriginID, "Market opens at 10"); err != nil {
		t.Fatal(err)
	}
	alice.WaitMessage(t, wait, func(m xmpptest.Message) bool {
		return m.Nick == "meshbridge" && strings.Contains(m.Body, "alice: your correction was not sent over radio")
	})
	if slices.ContainsFunc(br.radio.Received(), relText("alice (edit): Market opens at 10")) {
		t.Error("a second correction went out over radio")
	}
}

// A correction of a message sent longer ago than the edit window is not
// sent, and the room is told.
func TestCorrectionWindow(t *testing.T) {
	srv, room, alice := startRoom(t)
	br := startBridge(t, srv, room, func(c *xmppgw.Config) { c.EditWindow = time.Nanosecond })
	relReady(t, br, alice)
	first := relSays(t, alice, room, "Meet at noon")
	relPacket(t, br, "the message", relText("alice: Meet at noon"))
	if _, err := alice.Correct(context.Background(), room.String(), first.OriginID, "Meet at one"); err != nil {
		t.Fatal(err)
	}
	alice.WaitMessage(t, wait, func(m xmpptest.Message) bool {
		return m.Nick == "meshbridge" && strings.Contains(m.Body, "the message went out more than")
	})
	if slices.ContainsFunc(br.radio.Received(), relText("alice (edit): Meet at one")) {
		t.Error("a correction outside the window went out over radio")
	}
}

// A retraction of a message still queued removes it, and the room is told;
// of one already sent, the room is told it cannot be unsent. The fallback
// body a client puts in a retraction never reaches the mesh.
func TestRetractions(t *testing.T) {
	srv, room, alice := startRoom(t)
	testRetractions(t, startBridge(t, srv, room, nil, slowRadio), alice, room)
}

func testRetractions(t *testing.T, br *bridge, alice *xmpptest.Client, room jid.JID) {
	ctx := context.Background()
	relReady(t, br, alice)
	sent := relSays(t, alice, room, "Party at mine tonight")
	relPacket(t, br, "the first message", relText("alice: Party at mine tonight"))
	queued := relSays(t, alice, room, "My address is 12 Mill Road")
	if _, err := alice.Retract(ctx, room.String(), queued.StanzaID); err != nil {
		t.Fatal(err)
	}
	alice.WaitMessage(t, wait, func(m xmpptest.Message) bool {
		return m.Nick == "meshbridge" && strings.Contains(m.Body, "alice: your message “My address is 12 Mill Road” was taken back before it went out over radio")
	})
	if _, err := alice.Retract(ctx, room.String(), sent.StanzaID); err != nil {
		t.Fatal(err)
	}
	alice.WaitMessage(t, wait, func(m xmpptest.Message) bool {
		return m.Nick == "meshbridge" && strings.Contains(m.Body, "alice: your message “Party at mine tonight” already went out over radio; it cannot be unsent")
	})
	relSays(t, alice, room, "Never mind")
	relPacket(t, br, "the message after", relText("alice: Never mind"))
	for _, s := range received(br.radio) {
		if strings.Contains(s, "Mill Road") || strings.Contains(s, "retract") {
			t.Errorf("the radio took %q", s)
		}
	}
}

// The happy paths against ejabberd: reactions, replies, a correction and
// a retraction, both ways where there are two.
func TestRelationsEjabberd(t *testing.T) {
	srv := xmpptest.StartEjabberd(t, xmpptest.WithAccount("bridge", "bridge-pw"), xmpptest.WithAccount("alice", "alice-pw"))
	room := jid.MustParse("village@" + srv.MUCDomain)
	alice := xmpptest.Dial(t, srv, "alice", "alice-pw")
	if err := alice.Join(context.Background(), room.String(), "alice"); err != nil {
		t.Fatal(err)
	}
	br := startBridge(t, srv, room, nil, slowRadio)
	ctx := context.Background()

	m, pid := relMeshSays(t, br, alice, nodeAna, "Hello ejabberd")
	br.radio.Inject(br.radio.TapbackPacket(nodeKofi, pid, "👍"))
	alice.WaitReaction(t, wait, m.StanzaID, "👍")
	if _, err := alice.React(ctx, room.String(), m.StanzaID, "🎉"); err != nil {
		t.Fatal(err)
	}
	if p := relPacket(t, br, "the tapback", relTapback("🎉")); p.GetDecoded().GetReplyId() != pid {
		t.Errorf("tapback names %d, want %d", p.GetDecoded().GetReplyId(), pid)
	}
	br.radio.Inject(br.radio.ReplyPacket(nodeKofi, pid, "Hi there"))
	r := alice.WaitMessage(t, wait, func(m xmpptest.Message) bool { return strings.HasSuffix(m.Body, "Kofi: Hi there") })
	if r.ReplyID != m.StanzaID {
		t.Errorf("reply names %q, want %q", r.ReplyID, m.StanzaID)
	}
	if _, err := alice.Reply(ctx, room.String(), m.From, m.StanzaID, m.Body, "Welcome"); err != nil {
		t.Fatal(err)
	}
	if p := relPacket(t, br, "the reply", relText("alice: Welcome")); p.GetDecoded().GetReplyId() != pid {
		t.Errorf("reply names %d, want %d", p.GetDecoded().GetReplyId(), pid)
	}
	// The reply waits behind the tapback (paced): correct it, then retract
	// the next one.
	queued := relSays(t, alice, room, "Seee you")
	if _, err := alice.Correct(ctx, room.String(), queued.OriginID, "See you"); err != nil {
		t.Fatal(err)
	}
	gone := relSays(t, alice, room, "Not for the mesh")
	if _, err := alice.Retract(ctx, room.String(), gone.StanzaID); err != nil {
		t.Fatal(err)
	}
	alice.WaitMessage(t, wait, func(m xmpptest.Message) bool {
		return m.Nick == "meshbridge" && strings.Contains(m.Body, "was taken back before it went out over radio")
	})
	relPacket(t, br, "the corrected message", relText("alice: See you"))
	if slices.ContainsFunc(br.radio.Received(), relText("alice: Seee you")) || slices.ContainsFunc(br.radio.Received(), relText("alice: Not for the mesh")) {
		t.Errorf("the radio took %q", received(br.radio))
	}
}
