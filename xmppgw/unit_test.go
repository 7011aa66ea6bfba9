package xmppgw

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

func testConfig() Config {
	return Config{
		JID: jid.MustParse("bridge@example.org"), Password: "pw",
		Rooms: []Room{{JID: jid.MustParse("village@conference.example.org"), Nick: "meshbridge"}},
	}
}

var flagName = regexp.MustCompile(`(^|[\s(])--?[a-z]`)

func TestValidate(t *testing.T) {
	tests := []struct {
		name      string
		edit      func(*Config)
		wantField string
		wantErr   string
	}{
		{"ok", func(*Config) {}, "", ""},
		{"no localpart", func(c *Config) { c.JID = jid.MustParse("example.org") }, "JID", "user@domain"},
		{"no password", func(c *Config) { c.Password = "" }, "Password", "password"},
		{"bad server", func(c *Config) { c.Server = "example.org" }, "Server", "host:port"},
		{"negative parts", func(c *Config) { c.MaxChunks = -1 }, "MaxChunks", "at least 1"},
		{"no rooms", func(c *Config) { c.Rooms = nil }, "Rooms", "no room"},
		{"room with resource", func(c *Config) { c.Rooms[0].JID = jid.MustParse("v@c.example.org/nick") }, "Rooms", "bare room"},
		{"no nick", func(c *Config) { c.Rooms[0].Nick = "" }, "Rooms", "no nick"},
		{"channel twice", func(c *Config) { c.Rooms = append(c.Rooms, Room{JID: jid.MustParse("b@c.example.org"), Nick: "n"}) }, "Rooms", "two rooms"},
		{"format without text", func(c *Config) { c.Format = "{name}" }, "Format", "{text}"},
	}
	for _, tt := range tests {
		c := testConfig()
		tt.edit(&c)
		c.Defaults()
		err := c.Validate()
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("%s: err = %v", tt.name, err)
			}
			continue
		}
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != tt.wantField || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: err = %v (%#v), want %q about %s", tt.name, err, err, tt.wantErr, tt.wantField)
			continue
		}
		// A library does not know how its caller names the setting.
		if flagName.MatchString(err.Error()) {
			t.Errorf("%s: %q names a flag", tt.name, err)
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
	select {
	case o := <-g.toRoom:
		if !o.dm || o.body != "!a1b2c3d4: psst" {
			t.Errorf("DM queued as %+v", o)
		}
	default:
		t.Error("DM to our radio not queued")
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
		name string
		p    *inPresence
		want roomState
	}{
		{"kicked", self(statusSelf, statusKicked), roomWaiting},
		{"technical kick", self(statusSelf, statusTechnicalKick), roomWaiting},
		{"service shutdown", self(statusSelf, statusShutdown), roomWaiting},
		{"kicked without 110 (older servers)", self(statusKicked), roomWaiting},
		{"banned", self(statusSelf, statusBanned), roomGone},
		{"destroyed without 110 (ejabberd)", destroyed, roomGone},
	}
	g := newTestGateway(t, nil)
	for _, tt := range tests {
		r := joinedRoom(g, occupant)
		if s := r.onPresence(tt.p); s != stepNone {
			t.Errorf("%s: step %v, want none", tt.name, s)
		}
		if r.state != tt.want || (r.state == roomWaiting) == r.rejoinAt.IsZero() {
			t.Errorf("%s: state %v rejoin at %v, want state %v", tt.name, r.state, r.rejoinAt, tt.want)
		}
		if r.state == roomWaiting && (r.due(time.Now()) || !r.due(r.rejoinAt.Add(time.Millisecond))) {
			t.Errorf("%s: rejoin not due exactly after the pause", tt.name)
		}
	}
	// Another occupant leaving changes nothing.
	r := joinedRoom(g, occupant)
	other := self(statusKicked)
	other.From = jid.MustParse("village@conference.example.org/alice")
	if s := r.onPresence(other); s != stepNone || !r.joined() {
		t.Errorf("another occupant's kick: step %v, state %v", s, r.state)
	}
}

func joinedRoom(g *Gateway, occupant jid.JID) *room {
	r := newRoom(g.cfg.Rooms[0], &g.cfg, g.log)
	r.state, r.occupant = roomJoined, occupant
	return r
}

// Joining: a taken nick gets a suffix, a few times; our own presence means
// we are in, and what waited is posted; a refusal ends the bridging.
func TestJoinRoom(t *testing.T) {
	g := newTestGateway(t, nil)
	r := newRoom(g.cfg.Rooms[0], &g.cfg, g.log)
	if r.reconnected() != stepJoin || !r.beginJoin(time.Now()) || r.occupant.String() != "village@conference.example.org/meshbridge" {
		t.Fatalf("first join as %v", r.occupant)
	}
	conflict := &inPresence{From: r.occupant, Type: "error", Error: &stanza.Error{Condition: stanza.Conflict}}
	if s := r.onPresence(conflict); s != stepJoin || r.nick != "meshbridge2" {
		t.Errorf("conflict: step %v, nick %q", s, r.nick)
	}
	r.beginJoin(time.Now())
	in := &inPresence{From: r.occupant, X: &mucUserX{Statuses: []struct {
		Code int `xml:"code,attr"`
	}{{statusSelf}}}, OccupantID: &idElem{ID: "occ-1"}}
	if s := r.onPresence(in); s != stepFlush || !r.joined() || r.occupantID != "occ-1" || r.conflicts != 0 {
		t.Errorf("own presence: step %v, state %v, occupant id %q", s, r.state, r.occupantID)
	}
	if s := r.onPresence(in); s != stepNone {
		t.Errorf("own presence again: step %v, want none (nothing to flush twice)", s)
	}
	if s := r.forgotten("test"); s != stepJoin || r.state != roomJoining {
		t.Errorf("forgotten: step %v, state %v", s, r.state)
	}
	if s := r.forgotten("test"); s != stepNone {
		t.Errorf("forgotten while not in: step %v", s)
	}

	for i := 0; i < 6; i++ {
		r.onPresence(conflict)
	}
	if !r.gone() || r.reconnected() != stepNone {
		t.Errorf("after 6 conflicts: state %v", r.state)
	}

	r = newRoom(g.cfg.Rooms[0], &g.cfg, g.log)
	r.beginJoin(time.Now())
	if r.onPresence(&inPresence{From: r.occupant, Type: "error", Error: &stanza.Error{Condition: stanza.Forbidden}}); !r.gone() {
		t.Errorf("forbidden: state %v", r.state)
	}
	r = newRoom(g.cfg.Rooms[0], &g.cfg, g.log)
	r.beginJoin(time.Now())
	if r.onPresence(&inPresence{From: r.occupant, Type: "error", Error: &stanza.Error{Condition: stanza.ServiceUnavailable}}); r.state != roomWaiting {
		t.Errorf("service unavailable: state %v, want a pause", r.state)
	}
	if r.reconnected() != stepJoin || r.state != roomJoining || !r.rejoinAt.IsZero() {
		t.Errorf("a new connection does not join at once: state %v", r.state)
	}
	if r.due(time.Now()) || !r.due(time.Now().Add(31*time.Second)) {
		t.Error("an unanswered join is not retried after 30s")
	}
	r.nick = "\xff" // not UTF-8: no JID can carry it
	if r.beginJoin(time.Now()) || !r.gone() {
		t.Errorf("unusable nick: state %v, occupant %v", r.state, r.occupant)
	}
}

// A room that keeps removing us is given doubling pauses, up to the cap;
// a stay of over a minute starts the pauses over.
func TestRejoinBackoff(t *testing.T) {
	g := newTestGateway(t, func(c *Config) { c.RejoinDelay, c.BackoffMax = time.Second, 5*time.Second })
	r := joinedRoom(g, jid.MustParse("village@conference.example.org/meshbridge"))
	var got []time.Duration
	for range 5 {
		r.joinedAt = time.Now()
		got = append(got, r.scheduleRejoin())
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("pauses %v, want %v", got, want)
	}
	r.joinedAt = time.Now().Add(-2 * time.Minute)
	if d := r.scheduleRejoin(); d != time.Second {
		t.Errorf("after a long stay: pause %v, want 1s", d)
	}
}

// recordingBus remembers subscriptions; failAt makes the n-th one fail.
type recordingBus struct {
	mu      sync.Mutex
	filters []string
	active  int
	failAt  int
}

func (b *recordingBus) Publish(string, []byte, bool) error { return nil }
func (b *recordingBus) Subscribe(filter string, _ func(string, []byte)) (func(), error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.filters)+1 == b.failAt {
		return nil, errors.New("broker closed")
	}
	b.filters = append(b.filters, filter)
	b.active++
	return func() { b.mu.Lock(); b.active--; b.mu.Unlock() }, nil
}

// Run subscribes first thing and says so; the subscriptions end with Run.
// A failed subscription ends Run with nothing left subscribed.
func TestRunSubscribes(t *testing.T) {
	c := testConfig()
	c.Server = "127.0.0.1:1" // refused: Run keeps retrying
	bus := &recordingBus{}
	g, err := New(c, bus, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	select {
	case <-g.Subscribed():
	case err := <-done:
		t.Fatalf("Run ended before subscribing: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Subscribed not closed")
	}
	bus.mu.Lock()
	filters, active := strings.Join(bus.filters, " "), bus.active
	bus.mu.Unlock()
	for _, f := range []string{topics.MeshRX, topics.MeshResult, topics.NodesFilter, topics.RadioFilter, topics.StatusFilter, topics.MeshAmendResult} {
		if !strings.Contains(filters, f) {
			t.Errorf("not subscribed to %s before Subscribed: %s", f, filters)
		}
	}
	if active != 6 {
		t.Errorf("%d subscriptions active", active)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v after ctx ended, want nil", err)
	}
	if bus.active != 0 {
		t.Errorf("%d subscriptions left after Run", bus.active)
	}

	bus = &recordingBus{failAt: 3}
	g, _ = New(c, bus, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := g.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "broker closed") {
		t.Errorf("Run = %v, want the subscription error", err)
	}
	select {
	case <-g.Subscribed():
		t.Error("Subscribed closed although Run failed to subscribe")
	default:
	}
	if bus.active != 0 {
		t.Errorf("%d subscriptions left after a failed Run", bus.active)
	}
}

func drainNotices(g *Gateway) []notice {
	var out []notice
	for len(g.notices) > 0 {
		out = append(out, <-g.notices)
	}
	return out
}

// Airtime held back by the radio link is told to every room once per
// blocked period; status records without the field (older bridges) and a
// radio that is not online say nothing.
func TestAirtimeBlockedNotice(t *testing.T) {
	g := newTestGateway(t, func(c *Config) {
		c.Rooms = append(c.Rooms, Room{JID: jid.MustParse("farm@conference.example.org"), Nick: "meshbridge", Channel: "farm"})
	})
	steps := []struct {
		record string
		told   int
	}{
		{`{"state":"online","device":"sim","since":"2026-01-01T00:00:00Z"}`, 0},
		{`{"state":"online","airtime_blocked":true,"airtime_blocked_since":"2026-01-01T00:01:00Z"}`, 2},
		{`{"state":"online","airtime_blocked":true}`, 0}, // the same period, published again
		{`{"state":"online"}`, 0},
		{`{"state":"online","airtime_blocked":true}`, 2}, // a new period
		{`{"state":"disconnected","error":"gone"}`, 0},
		{`{"state":"connecting","airtime_blocked":true}`, 0},
	}
	g.onRadio(topics.Radio("!5eed0001"), []byte(`{"id":"!5eed0001","num":1592590337}`))
	for i, s := range steps {
		g.onStatus(topics.Status("!5eed0001"), []byte(s.record))
		got := drainNotices(g)
		if len(got) != s.told {
			t.Errorf("step %d %s: %d notices, want %d", i, s.record, len(got), s.told)
		}
		for _, n := range got {
			if !strings.Contains(n.text, "airtime") {
				t.Errorf("step %d: notice %q", i, n.text)
			}
		}
	}
}

func result(id uint32, reason meshpb.Routing_Error) []byte {
	b, _ := topics.Result{Origin: topics.OriginXMPP, RequestID: id, Reason: reason}.Marshal()
	return b
}

// Refusals that come together are told in one notice per room, once the
// burst is over, naming the authors and the first words of what was
// refused, and bounded in length however long the burst.
func TestRefusalsCoalesce(t *testing.T) {
	g := newTestGateway(t, nil)
	room := g.cfg.Rooms[0].JID
	ask := func(id uint32, nick, key, body string, part, parts int) {
		g.requests[id] = requestInfo{room: room, nick: nick, msg: key, words: firstWords(body), part: part, parts: parts, asked: time.Now()}
	}
	// One message, one part refused.
	ask(1, "alice", "m1", "Hello mesh, this is the first and only message today", 2, 2)
	ask(2, "alice", "m1", "", 1, 2)
	g.onResult("", result(2, meshpb.Routing_NONE))
	g.onResult("", result(1, meshpb.Routing_RATE_LIMIT_EXCEEDED))
	now := time.Now()
	g.tellRefusals(now)
	if n := drainNotices(g); len(n) != 0 {
		t.Fatalf("told before the burst was over: %v", n)
	}
	g.tellRefusals(now.Add(refusalQuiet))
	n := drainNotices(g)
	if len(n) != 1 || n[0].text != "⚠ alice: your message “Hello mesh, this is the first and only…” (part 2/2) did not reach the mesh: "+describe(meshpb.Routing_RATE_LIMIT_EXCEEDED) {
		t.Errorf("notices %+v", n)
	}

	// A burst of 300 from two people, as after an outage: one notice.
	for i := range 300 {
		nick := []string{"alice", "bob"}[i%2]
		ask(uint32(100+i), nick, fmt.Sprintf("k%d", i), fmt.Sprintf("message number %d %s", i, strings.Repeat("blah ", 40)), 1, 1)
	}
	for i := range 300 {
		g.onResult("", result(uint32(100+i), meshpb.Routing_RATE_LIMIT_EXCEEDED))
	}
	g.tellRefusals(time.Now().Add(refusalQuiet))
	n = drainNotices(g)
	if len(n) != 1 {
		t.Fatalf("%d notices for one burst", len(n))
	}
	text := n[0].text
	for _, want := range []string{"⚠ 300 messages did not reach the mesh: too much at once", "\n• alice: “message number 0 blah blah blah blah…”",
		"\n• bob: “message number 1 blah", "\n• and 295 more, from bob, alice"} {
		if !strings.Contains(text, want) {
			t.Errorf("notice lacks %q:\n%s", want, text)
		}
	}
	if len(text) > 600 {
		t.Errorf("notice of %d bytes:\n%s", len(text), text)
	}
	if g.Stats.Refused.Load() != 301 {
		t.Errorf("refused %d", g.Stats.Refused.Load())
	}

	// A steady stream is told at least every refusalMaxDelay; reasons differ.
	start := time.Now()
	ask(1000, "carol", "c1", "first", 1, 1)
	ask(1001, "carol", "c2", "second", 1, 1)
	g.onResult("", result(1000, meshpb.Routing_NO_INTERFACE))
	g.onResult("", result(1001, meshpb.Routing_TOO_LARGE))
	g.mu.Lock()
	g.refused[room.String()].first = start.Add(-refusalMaxDelay)
	g.mu.Unlock()
	g.tellRefusals(start)
	n = drainNotices(g)
	if len(n) != 1 || !strings.Contains(n[0].text, "• carol: “first” ("+describe(meshpb.Routing_NO_INTERFACE)+")") ||
		!strings.Contains(n[0].text, "• carol: “second” ("+describe(meshpb.Routing_TOO_LARGE)+")") {
		t.Errorf("notices %+v", n)
	}
}

func TestFirstWords(t *testing.T) {
	for in, want := range map[string]string{
		"short":                 "short",
		"  spaced \n\t out  ":   "spaced out",
		strings.Repeat("é", 30): strings.Repeat("é", 20) + "…",
		"one two three four five six seven eight nine ten": "one two three four five six seven eight…",
		"日本語のテキストはスペースなしで書かれています":                          "日本語のテキストはスペース…", // 39 bytes
	} {
		if got := firstWords(in); got != want {
			t.Errorf("firstWords(%q) = %q, want %q", in, got, want)
		}
	}
}

// Mesh texts keep coming while the XMPP server is away: beyond what the
// session's channel holds they wait in order, none dropped, and go to the
// session as it drains.
func TestMeshTextsWaitBeyondTheChannel(t *testing.T) {
	g := newTestGateway(t, nil)
	n := cap(g.toRoom) + 50
	for i := range n {
		g.onMeshRX("", rx(0xa1b2c3d4, mesh.Broadcast, uint32(i+1), fmt.Sprintf("text %d", i), false))
	}
	for i := range n {
		var o outbound
		select {
		case o = <-g.toRoom:
		default:
			t.Fatalf("only %d of %d texts reached the session", i, n)
		}
		g.refill()
		if want := fmt.Sprintf("!a1b2c3d4: text %d", i); o.body != want {
			t.Fatalf("text %d is %q, want %q", i, o.body, want)
		}
	}
}
