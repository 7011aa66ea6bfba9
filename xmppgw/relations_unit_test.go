package xmppgw

import (
	"context"
	"encoding/xml"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"mellium.im/xmpp/jid"

	"github.com/jshiffer/lora-xmpp-bridge/internal/spool"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

func TestStripFallback(t *testing.T) {
	reply := func(start, end string) []fallbackElem {
		return []fallbackElem{{For: nsReply, Bodies: []fallbackRange{{Start: start, End: end}}}}
	}
	for _, tc := range []struct {
		name, body string
		fbs        []fallbackElem
		want       string
	}{
		{"quote", "> Ana: hi\nhello", reply("0", "10"), "hello"},
		{"code points, not bytes", "> Ana: 🌄☕\nyes", reply("0", "10"), "yes"},
		{"another spec's fallback kept", "> Ana: hi\nhello", []fallbackElem{{For: nsRetract, Bodies: []fallbackRange{{Start: "0", End: "10"}}}}, "> Ana: hi\nhello"},
		{"whole body", "quoted", []fallbackElem{{For: nsReply, Bodies: []fallbackRange{{}}}}, ""},
		{"end past the body", "> x\nyo", reply("0", "99"), ""},
		{"backwards", "> x\nyo", reply("4", "2"), "> x\nyo"},
		{"negative", "> x\nyo", reply("-1", "2"), "> x\nyo"},
		{"not numbers", "> x\nyo", reply("a", "b"), "> x\nyo"},
		{"two ranges", "[a]mid[b]", []fallbackElem{{For: nsReply, Bodies: []fallbackRange{{Start: "0", End: "3"}, {Start: "6", End: "9"}}}}, "mid"},
		{"none", "plain", nil, "plain"},
	} {
		if got := stripFallback(tc.body, tc.fbs, nsReply); got != tc.want {
			t.Errorf("%s: %q", tc.name, got)
		}
	}
}

// A reply as a client sends it decodes with its fallback, and the quote
// the bridge puts before a mesh reply is marked to the code point.
func TestReplyStanzas(t *testing.T) {
	in := `<message xmlns="jabber:client" type="groupchat" from="r@c/alice" id="x"><body>&gt; Ana: ☕ hi
thanks</body><reply xmlns="urn:xmpp:reply:0" to="r@c/meshbridge" id="sid-1"/>` +
		`<fallback xmlns="urn:xmpp:fallback:0" for="urn:xmpp:reply:0"><body start="0" end="12"/></fallback></message>`
	var m inMessage
	if err := xml.Unmarshal([]byte(in), &m); err != nil {
		t.Fatal(err)
	}
	if m.Reply == nil || m.Reply.ID != "sid-1" || stripFallback(m.body(), m.Fallbacks, nsReply) != "thanks" {
		t.Errorf("decoded %+v", m.msgExt)
	}
	quote, n := quoteFallback("Ana: two\nlines ☕")
	if quote != "> Ana: two\n> lines ☕\n" || n != utf8.RuneCountInString(quote) {
		t.Errorf("quote %q, %d", quote, n)
	}
	out, err := xml.Marshal(outMessage{ID: "i", To: "r@c", Type: "groupchat", Reactions: &reactionsElem{ID: "sid-1", Reactions: []string{"👍"}}, Store: &storeHint{}})
	if err != nil {
		t.Fatal(err)
	}
	if s := string(out); strings.Contains(s, "<body") || !strings.Contains(s, `<reactions xmlns="urn:xmpp:reactions:0" id="sid-1"><reaction>👍</reaction></reactions>`) ||
		!strings.Contains(s, `<store xmlns="urn:xmpp:hints">`) {
		t.Errorf("reaction encodes as %s", s)
	}
}

// Whatever ranges a client marks, stripping them keeps a part of the body
// and never breaks a character.
func FuzzStripFallback(f *testing.F) {
	f.Add("> Ana: hi\nhello", "0", "10")
	f.Add("🌄🌄", "1", "2")
	f.Add("x", "", "")
	f.Fuzz(func(t *testing.T, body, start, end string) {
		got := stripFallback(body, []fallbackElem{{For: nsReply, Bodies: []fallbackRange{{Start: start, End: end}}}}, nsReply)
		if utf8.ValidString(body) && !utf8.ValidString(got) {
			t.Fatalf("%q stripped to invalid %q", body, got)
		}
		if utf8.RuneCountInString(got) > utf8.RuneCountInString(body) {
			t.Fatalf("%q grew to %q", body, got)
		}
	})
}

func openTestSpool(t testing.TB) *spool.Store {
	s, err := spool.Open(filepath.Join(t.TempDir(), "spool.db"), spool.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Relations are found by the room's ids and by packet ids, survive a
// restart (one spool item per message, however often it changed), and
// are bounded in number and age.
func TestRelationsKept(t *testing.T) {
	store := openTestSpool(t)
	log := slog.New(slog.DiscardHandler)
	rs := newRelations(store, log)
	now := time.Now()
	rs.add(relation{Key: "xmpp:r:s1", Room: "r", StanzaID: "s1", OriginID: "o1", At: now})
	rs.add(relation{Key: "mesh-a-1", Room: "r", StanzaID: "s2", Packet: 0x1234, At: now})
	rs.update("xmpp:r:s1", func(r *relation) bool { r.Wire = map[string][]uint32{"!5eed0001": {7, 8}}; return true })
	rs.update("xmpp:r:s1", func(r *relation) bool { r.Edited = true; return true })
	rs.add(relation{Key: "xmpp:r:s1", Room: "r", At: now}) // offered again: not replaced

	again := newRelations(store, log)
	again.load(now)
	for _, tc := range []struct {
		got  func() (relation, bool)
		want string
	}{
		{func() (relation, bool) { return again.byID("r", "s1") }, "xmpp:r:s1"},
		{func() (relation, bool) { return again.byID("r", "o1") }, "xmpp:r:s1"},
		{func() (relation, bool) { return again.byPacket(8) }, "xmpp:r:s1"},
		{func() (relation, bool) { return again.byPacket(0x1234) }, "mesh-a-1"},
	} {
		if r, ok := tc.got(); !ok || r.Key != tc.want {
			t.Errorf("found %+v (%v), want %s", r, ok, tc.want)
		}
	}
	if r, _ := again.get("xmpp:r:s1"); !r.Edited || len(r.Wire["!5eed0001"]) != 2 {
		t.Errorf("after a restart: %+v", r)
	}
	if _, ok := again.byID("s", "s1"); ok {
		t.Error("found a message of another room")
	}
	if n, _, _, _ := store.Stats(relationsQueue); n != 2 {
		t.Errorf("%d items in the spool for 2 messages", n)
	}

	// Too old at the next start: forgotten, in memory and on disk.
	later := newRelations(store, log)
	later.load(now.Add(relationsMaxAge + time.Hour))
	if _, ok := later.byPacket(0x1234); ok {
		t.Error("a relation older than the bound was kept")
	}
	if n, _, _, _ := store.Stats(relationsQueue); n != 0 {
		t.Errorf("%d old items left in the spool", n)
	}

	// Beyond the number kept, the oldest go first.
	for i := range relationsKept + 10 {
		rs.add(relation{Key: fmt.Sprintf("k%d", i), Room: "r", StanzaID: fmt.Sprintf("id%d", i), Packet: uint32(i + 1), At: now})
	}
	if _, ok := rs.byID("r", "id0"); ok {
		t.Error("the oldest relation was kept beyond the bound")
	}
	if _, ok := rs.byPacket(relationsKept + 10); !ok {
		t.Error("the newest relation was dropped")
	}
	if len(rs.byKey) != relationsKept || len(rs.refs) > relationsKept || len(rs.packet) > relationsKept {
		t.Errorf("%d relations, %d ids, %d packets in memory", len(rs.byKey), len(rs.refs), len(rs.packet))
	}
	if n, _, _, _ := store.Stats(relationsQueue); n != relationsKept {
		t.Errorf("%d items in the spool, want %d", n, relationsKept)
	}
}

// Whatever the spool holds under the relations queue, loading it neither
// fails nor keeps more than the bound.
func FuzzRelationsLoad(f *testing.F) {
	f.Add([]byte(`{"key":"k","room":"r","stanza_id":"s","packet":5,"at":"2030-01-01T00:00:00Z"}`), []byte(`{"key":"k","wire":{"!a":[0,3]}}`))
	f.Add([]byte(`{`), []byte(`{"key":""}`))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		store := openTestSpool(t)
		for _, d := range [][]byte{a, b} {
			if _, _, err := store.Push(relationsQueue, d, ""); err != nil {
				t.Skip()
			}
		}
		rs := newRelations(store, slog.New(slog.DiscardHandler))
		rs.load(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
		if len(rs.byKey) > 2 {
			t.Fatalf("%d relations from 2 items", len(rs.byKey))
		}
		for key := range rs.byKey {
			if _, ok := rs.get(key); !ok || key == "" {
				t.Fatalf("relation %q loaded but not found", key)
			}
		}
	})
}

// publishedBus keeps what is published.
type publishedBus struct {
	mu  sync.Mutex
	got map[string][][]byte
}

func (b *publishedBus) Publish(topic string, p []byte, _ bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.got == nil {
		b.got = map[string][][]byte{}
	}
	b.got[topic] = append(b.got[topic], p)
	return nil
}

func (b *publishedBus) Subscribe(string, func(string, []byte)) (func(), error) { return func() {}, nil }

func (b *publishedBus) amends(t *testing.T, radio string) []topics.Amend {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []topics.Amend
	for _, p := range b.got[topics.MeshAmendTo(radio)] {
		a, err := topics.ParseAmend(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

func outboxTexts(g *Gateway) []string {
	var out []string
	for _, k := range g.pendingSends() {
		out = append(out, k.Target+"|"+k.Text)
	}
	return out
}

// A correction or retraction changes what waits for the mesh: in the
// outbox while no radio is known, through the radio side's queue once one
// is; only its author's counts, and the radio side's answer decides.
func TestAmendWhatWaits(t *testing.T) {
	bus := &publishedBus{}
	g, err := New(func() Config { c := testConfig(); c.Spool = openTestSpool(t); return c }(), bus, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	room := g.cfg.Rooms[0].JID
	alice, bob := jid.MustParse(room.String()+"/alice"), jid.MustParse(room.String()+"/bob")
	r := joinedRoom(g, jid.MustParse(room.String()+"/meshbridge"))
	say := func(from jid.JID, body, key string, ext msgExt) {
		t.Helper()
		if err := g.fromRoomMsg(context.Background(), nil, r, roomMsg{from: from, body: body, key: key, sid: "s-" + key, oid: "o-" + key, ext: ext}); err != nil {
			t.Fatal(err)
		}
	}

	// No radio known: the message waits in the outbox, and is changed there.
	say(alice, "helo", "k1", msgExt{})
	say(bob, "hijacked", "k2", msgExt{Replace: &idOnly{ID: "o-k1"}})
	say(alice, "hello", "k3", msgExt{Replace: &idOnly{ID: "o-k1"}})
	if got := outboxTexts(g); !slices.Equal(got, []string{"|alice: hello"}) {
		t.Errorf("outbox after a correction: %q", got)
	}
	say(alice, "", "k4", msgExt{Retract: &idOnly{ID: "s-k1"}})
	if got := outboxTexts(g); len(got) != 0 {
		t.Errorf("outbox after a retraction: %q", got)
	}
	if n := drainNotices(g); !slices.ContainsFunc(n, func(n notice) bool { return strings.Contains(n.text, "alice: your message “hello” was taken back") }) {
		t.Errorf("notices %+v", n)
	}

	// A radio online: what waited is handed to it, and a correction is
	// asked of its radio side, and done once it answers.
	say(alice, "wait for me", "k8", msgExt{})
	g.onRadio(topics.Radio("!5eed0001"), []byte(`{"id":"!5eed0001","num":1592590337}`))
	g.onStatus(topics.Status("!5eed0001"), []byte(`{"state":"online","device":"sim","since":"x"}`))
	say(alice, "wait for me!", "k9", msgExt{Replace: &idOnly{ID: "o-k8"}})
	if got := outboxTexts(g); !slices.Equal(got, []string{"!5eed0001|alice: wait for me"}) {
		t.Errorf("outbox after correcting a message handed to a radio: %q", got)
	}
	if asked := bus.amends(t, "!5eed0001"); len(asked) != 1 || string(asked[0].Data.GetPayload()) != "alice: wait for me!" {
		t.Errorf("amends asked: %+v", asked)
	}
	g.sent(g.pendingSends()[0].seq)
	say(alice, "meet at 5", "k5", msgExt{})
	say(alice, "meet at 6", "k6", msgExt{Replace: &idOnly{ID: "o-k5"}})
	asked := bus.amends(t, "!5eed0001")[1:]
	if len(asked) != 1 || asked[0].Action != topics.AmendReplace || asked[0].Target != requestID("k5@!5eed0001", 0) ||
		string(asked[0].Data.GetPayload()) != "alice: meet at 6" {
		t.Fatalf("amends asked: %+v", asked)
	}
	if got := outboxTexts(g); !slices.Equal(got, []string{"!5eed0001|alice: meet at 5"}) {
		t.Errorf("outbox changed before the radio side answered: %q", got)
	}
	answer, _ := topics.AmendResult{Origin: topics.OriginXMPP, ID: asked[0].ID, Target: asked[0].Target, Outcome: topics.AmendApplied}.Marshal()
	g.onAmendResult(topics.MeshAmendResult, answer)
	g.onAmendResult(topics.MeshAmendResult, answer) // a repeat changes nothing
	if got := outboxTexts(g); !slices.Equal(got, []string{"!5eed0001|alice: meet at 6"}) {
		t.Errorf("outbox after the radio side replaced it: %q", got)
	}
	if n := drainNotices(g); len(n) != 0 {
		t.Errorf("a correction in the queue made notices %+v", n)
	}

	// Too late for the radio side: the retraction says it cannot be unsent.
	say(alice, "", "k7", msgExt{Retract: &idOnly{ID: "s-k5"}})
	asked = bus.amends(t, "!5eed0001")[1:]
	late, _ := topics.AmendResult{Origin: topics.OriginXMPP, ID: asked[1].ID, Target: asked[1].Target, Outcome: topics.AmendNotWaiting}.Marshal()
	g.onAmendResult(topics.MeshAmendResult, late)
	if n := drainNotices(g); len(n) != 1 || !strings.Contains(n[0].text, "already went out over radio; it cannot be unsent") {
		t.Errorf("notices %+v", n)
	}
}

// The room message for a mesh tapback or reply, by what is known of the
// packet it names.
func TestRelateOut(t *testing.T) {
	g := newTestGateway(t, nil)
	g.onNode("", []byte(`{"id":"!13572468","long_name":"Kofi"}`))
	room := g.cfg.Rooms[0].JID
	r := joinedRoom(g, jid.MustParse(room.String()+"/meshbridge"))
	g.rel.add(relation{Key: "a", Room: room.String(), StanzaID: "sid-a", Author: room.String() + "/meshbridge", Quote: "Ana's T-Beam: pump fixed", Packet: 1, At: time.Now()})
	g.rel.add(relation{Key: "b", Room: room.String(), Quote: "alice: no id for this one", Wire: map[string][]uint32{"!5eed0001": {2}}, At: time.Now()})
	g.rel.add(relation{Key: "c", Room: "elsewhere@conference.example.org", StanzaID: "sid-c", Packet: 3, At: time.Now()})
	for _, tc := range []struct {
		name string
		rel  meshRel
		want string // the message, as XML
	}{
		{"tapback", meshRel{replyID: 1, emoji: true, from: "!13572468", text: "👍"},
			`<reactions xmlns="urn:xmpp:reactions:0" id="sid-a"><reaction>👍</reaction></reactions><store xmlns="urn:xmpp:hints"></store>`},
		{"second tapback: the set", meshRel{replyID: 1, emoji: true, from: "!13572468", text: "❤️"},
			`<reactions xmlns="urn:xmpp:reactions:0" id="sid-a"><reaction>👍</reaction><reaction>❤️</reaction></reactions>`},
		{"tapback on a message without a room id", meshRel{replyID: 2, emoji: true, from: "!13572468", text: "👍"},
			`<body>Kofi: reacted 👍 to “alice: no id for this one”</body>`},
		{"tapback on an unknown packet", meshRel{replyID: 9, emoji: true, from: "!13572468", text: "👍"},
			`<body>Kofi: reacted 👍 to an earlier message</body>`},
		{"tapback on another room's message", meshRel{replyID: 3, emoji: true, from: "!13572468", text: "👍"},
			`<body>Kofi: reacted 👍 to an earlier message</body>`},
		{"reply", meshRel{replyID: 1, from: "!13572468", text: "great"},
			`<body>&gt; Ana&#39;s T-Beam: pump fixed&#xA;Kofi: great</body>`},
		{"reply names the message", meshRel{replyID: 1, from: "!13572468", text: "great"},
			`<reply xmlns="urn:xmpp:reply:0" to="village@conference.example.org/meshbridge" id="sid-a"></reply><fallback xmlns="urn:xmpp:fallback:0" for="urn:xmpp:reply:0"><body start="0" end="27"></body></fallback>`},
		{"reply to a message without a room id: the quote only", meshRel{replyID: 2, from: "!13572468", text: "great"},
			`<body>&gt; alice: no id for this one&#xA;Kofi: great</body><origin-id xmlns="urn:xmpp:sid:0" id="mesh-13572468-00000007"></origin-id><fallback`},
		{"reply to an unknown packet", meshRel{replyID: 9, from: "!13572468", text: "great"},
			`<body>Kofi: great</body><origin-id xmlns="urn:xmpp:sid:0" id="mesh-13572468-00000007"></origin-id></message>`},
	} {
		text := tc.rel.text
		if tc.rel.emoji {
			text = "reacted " + text // as onMeshRX words it
		}
		o := outbound{id: "mesh-13572468-00000007", body: g.format("!13572468", "", text), rel: tc.rel, heard: time.Now()}
		m := outMessage{ID: o.id, To: room.String(), Type: "groupchat", Body: o.body, OriginID: &originID{o.id}}
		g.relateOut(r, o, &m)
		b, _ := xml.Marshal(m)
		if !strings.Contains(string(b), tc.want) {
			t.Errorf("%s: %s", tc.name, b)
		}
	}
}
