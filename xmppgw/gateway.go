package xmppgw

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
	"mellium.im/xmpp/jid"

	"github.com/jshiffer/lora-xmpp-bridge/internal/intake"
	"github.com/jshiffer/lora-xmpp-bridge/internal/retry"
	"github.com/jshiffer/lora-xmpp-bridge/internal/spool"
	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// Bus is the part of the broker the XMPP gateway uses.
type Bus interface {
	Publish(topic string, payload []byte, retain bool) error
	// Subscribe registers h for filter. h may run on the publisher's
	// goroutine: the gateway's handlers only copy the message and hand it
	// to the gateway's own loop, waiting only when that loop is far
	// behind (see inboxSize).
	Subscribe(filter string, h func(topic string, payload []byte)) (unsubscribe func(), err error)
}

// Stats are the XMPP gateway's counters.
type Stats struct {
	MeshToRoom, RoomToMesh, ChunksToMesh, Refused, Connects, Disconnects, Reflections atomic.Uint64
	// PostedByPeer counts mesh texts not posted because another bridge in
	// the room, on the same mesh, posted them.
	PostedByPeer atomic.Uint64
}

// Gateway is the XMPP side of the bridge.
type Gateway struct {
	cfg   Config
	bus   Bus
	log   *slog.Logger
	Stats Stats

	toRoom chan outbound // mesh texts for the rooms
	// overflow holds, in order, the mesh texts that arrive while toRoom is
	// full (the XMPP server away for long): they go into toRoom as it
	// drains. Bounded like a spool queue.
	overflow []outbound
	notices  chan notice // the bridge's own words to a room
	inbox    intake.Queue

	connected    atomic.Bool
	lastTick     atomic.Int64  // unix nanos of the last pass of the session loop
	subscribed   chan struct{} // closed once Run listens on the broker
	stopped      chan struct{} // closed once Run no longer takes anything in
	behindLogged atomic.Int64  // unix nanos: when a full inbox was last logged

	mu            sync.Mutex
	nodes         map[string]topics.NodeRecord
	radios        radios                   // the radio sides on the broker
	heardBy       map[uint64]string        // (from, id) of recent mesh texts -> the radio that heard it first
	relays        []pendingRelay           // mesh texts that may be for other meshes, in order
	airBlocked    bool                     // an online radio side holds packets back for airtime
	requests      map[uint32]requestInfo   // send requests awaiting an outcome
	refused       map[string]*refusalBatch // by room: refusals not yet told
	seenMsgs      map[string]bool          // room messages already sent on to the mesh
	toldRadioDown map[string]bool          // rooms told, in this outage, that the radio is away
	mechanism     string                   // SASL mechanism of the last login

	rel   *relations // what the bridge carried, to find it again from either side (relations.go)
	edits *edits     // reactions, corrections and retractions under way (relate.go)

	dm *directs // one-to-one chat, commands and what is known of the nodes

	sessionState sessionStatus // the session's state as last published (brokerstatus.go); Run's goroutine only
}

// outbound is a mesh text on its way to a room.
type outbound struct {
	channel    string
	channelIdx uint32
	id         string // deterministic from (from, packet id): a resend is recognisable, by other bridges too
	heardBy    string // gateway id of the radio that heard it
	body       string
	heard      time.Time
	posted     time.Time
	after      string // the room's id of the last message seen before posting
	dm         bool
	to         string // a direct message's recipient (a bare JID)
	queue      string // spool queue; "" when not spooled
	seq        uint64
	rel        meshRel // a tapback or a reply: the packet it refers to
}

type notice struct {
	room jid.JID
	text string
}

type requestInfo struct {
	room   jid.JID
	nick   string
	msg    string // the room message's key, shared by its parts
	words  string // the message's first words, to name it in a notice
	part   int    // 1-based
	parts  int    // how many packets the message became
	target string // the radio it was sent to
	asked  time.Time
	seq    uint64 // in the spool's mesh outbox until the radio link reports on it; 0 once it has
}

// inboxSize bounds what the broker has handed over and the intake loop
// not yet taken in. Everything the radio hears comes this way (a LoRa
// mesh: a few packets a second at most), and after each handshake the
// radio's node database (a few hundred records); taking one in costs at
// most one spool write. When it is full the handler waits, and with it
// the publisher (the radio link's loop): a mesh text is never dropped for
// want of room, only delayed.
const inboxSize = 4096

// New builds the XMPP gateway; Run starts it.
func New(cfg Config, bus Bus, log *slog.Logger) (*Gateway, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Gateway{
		cfg: cfg, bus: bus, log: log.With("component", "xmpp"),
		toRoom: make(chan outbound, 1024), notices: make(chan notice, 64), inbox: intake.New(inboxSize),
		subscribed: make(chan struct{}), stopped: make(chan struct{}),
		nodes: map[string]topics.NodeRecord{}, requests: map[uint32]requestInfo{}, seenMsgs: map[string]bool{},
		radios: newRadios(), heardBy: map[uint64]string{},
		toldRadioDown: map[string]bool{}, refused: map[string]*refusalBatch{},
		rel: newRelations(cfg.Spool, log.With("component", "xmpp")), edits: newEdits(),
		dm: newDirects(),
	}, nil
}

// Run keeps the gateway connected until ctx ends; call it once. It first
// restores what waited for the rooms and subscribes to the broker, then
// closes Subscribed. It returns an error wrapping ErrAuth when the server
// refuses the credentials, since retrying cannot help; every other failure
// is retried with capped backoff.
func (g *Gateway) Run(ctx context.Context) error {
	stopIntake := g.inbox.Start()
	rooms, unsubscribe, err := g.attach()
	if err != nil {
		stopIntake()
		close(g.stopped)
		return err
	}
	defer func() {
		unsubscribe()
		// What was handed over before the subscriptions ended is still
		// taken in, so it is on disk for the next start.
		stopIntake()
		// A handler still routed (an unsubscribe that could not reach an
		// absent broker) must not wait for a loop that is gone.
		close(g.stopped)
	}()
	close(g.subscribed)
	g.publishSession(topics.LinkOffline, 0)
	defer func() {
		g.mu.Lock()
		n := len(g.toRoom) + len(g.overflow)
		g.mu.Unlock()
		for _, r := range rooms {
			n += len(r.backlog) + len(r.unacked)
		}
		if n > 0 {
			g.log.Warn("stopping with mesh messages not yet confirmed by the room", "count", n)
		}
	}()
	relayCtx, stopRelays := context.WithCancel(ctx)
	relaysDone := make(chan struct{})
	go func() { defer close(relaysDone); g.relayLoop(relayCtx) }()
	defer func() { stopRelays(); <-relaysDone }()
	policy := retry.Policy{Min: g.cfg.BackoffMin, Max: g.cfg.BackoffMax, Healthy: time.Minute, Tick: g.tick}
	return retry.Run(ctx, policy, g.log, "XMPP connection lost; reconnecting", func(ctx context.Context) error {
		err := g.session(ctx, rooms)
		g.connected.Store(false)
		g.publishSession(topics.LinkOffline, 0)
		if ctx.Err() != nil {
			return nil
		}
		g.Stats.Disconnects.Add(1)
		if errors.Is(err, ErrAuth) {
			g.log.Error("XMPP login refused: check the JID and the password", "jid", g.cfg.JID.String(), "err", err)
			return retry.Permanent(err)
		}
		return err
	})
}

// Subscribed is closed once Run listens on the broker: from then on no
// mesh text is missed. The daemon waits for it before it starts the radio
// link. It stays open if Run fails before.
func (g *Gateway) Subscribed() <-chan struct{} { return g.subscribed }

// attach restores what waited for the rooms and subscribes to the broker.
// What waited comes back before new mesh texts can arrive, so nothing is
// both restored and queued anew.
func (g *Gateway) attach() (rooms []*room, unsubscribe func(), err error) {
	rooms = make([]*room, len(g.cfg.Rooms))
	g.rel.load(time.Now())
	g.restoreSends()
	for i, rc := range g.cfg.Rooms {
		r := newRoom(rc, &g.cfg, g.log)
		r.unacked = g.restoreRoom(r)
		r.lastStanza = g.lastSeen(r)
		rooms[i] = r
	}
	var unsubs []func()
	unsubscribe = func() {
		for _, u := range unsubs {
			u()
		}
	}
	for _, s := range []struct {
		filter string
		h      func(string, []byte)
	}{
		{topics.MeshRX, g.onMeshRX},
		{topics.MeshResult, g.onResult},
		{topics.NodesFilter, g.onNode},
		{topics.RadioFilter, g.onRadio},
		{topics.StatusFilter, g.onStatus},
		{topics.MeshAmendResult, g.onAmendResult},
	} {
		unsub, err := g.bus.Subscribe(s.filter, g.handOver(s.h))
		if err != nil {
			unsubscribe()
			return nil, nil, fmt.Errorf("subscribe to %s: %w", s.filter, err)
		}
		unsubs = append(unsubs, unsub)
	}
	return rooms, unsubscribe, nil
}

// handOver makes the broker handler of a subscription: it copies the
// message and hands it to the intake loop, so that the publisher's
// goroutine (the radio link's loop, or the broker's) never waits for the
// spool. One inbox for every topic keeps the order in which they were
// published: a node's name arrives before its next text.
func (g *Gateway) handOver(handle func(string, []byte)) func(string, []byte) {
	return func(topic string, payload []byte) {
		if g.inbox.Offer(handle, topic, payload) {
			return
		}
		if now := time.Now().UnixNano(); now-g.behindLogged.Swap(now) >= int64(time.Minute) {
			g.log.Warn("taking in what the mesh sends is behind (a slow disk?); the radio link waits for it", "waiting", len(g.inbox))
		}
		g.inbox.Wait(handle, topic, payload, g.stopped)
	}
}

// SpoolQueues names the spool queues the gateway keeps what waits for a
// room in, by the label the daemon's metrics give each.
func (g *Gateway) SpoolQueues() map[string]string {
	q := make(map[string]string, len(g.cfg.Rooms))
	for _, r := range g.cfg.Rooms {
		q["room:"+r.JID.String()] = outQueue(r.JID.String())
	}
	q["to-mesh"] = meshOutQueue
	return q
}

func (g *Gateway) tick() { g.lastTick.Store(time.Now().UnixNano()) }

// LastProgress is when the gateway's loop last made progress.
func (g *Gateway) LastProgress() time.Time { return time.Unix(0, g.lastTick.Load()) }

// Connected reports whether the XMPP session is up.
func (g *Gateway) Connected() bool { return g.connected.Load() }

// Mechanism is the SASL mechanism of the last login ("" before the first),
// e.g. SCRAM-SHA-1-PLUS when the login used channel binding.
func (g *Gateway) Mechanism() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.mechanism
}

// onMeshRX takes in a packet heard on the mesh: decide, keep on disk,
// queue for the session.
func (g *Gateway) onMeshRX(_ string, payload []byte) {
	var env meshpb.ServiceEnvelope
	if proto.Unmarshal(payload, &env) != nil {
		return
	}
	p := env.GetPacket()
	g.observeNode(&env)
	d := p.GetDecoded()
	if d.GetPortnum() != meshpb.PortNum_TEXT_MESSAGE_APP || len(d.GetPayload()) == 0 {
		return
	}
	radioID := env.GetGatewayId() // the radio that heard it
	if g.fromABridgeRadio(radioID, p) {
		return
	}
	from := mesh.NodeID(p.GetFrom())
	text := string(d.GetPayload())
	if d.GetEmoji() != 0 {
		text = "reacted " + text
	}
	o := outbound{
		channel: env.GetChannelId(), channelIdx: p.GetChannel(), heardBy: radioID,
		id:    fmt.Sprintf("mesh-%08x-%08x", p.GetFrom(), p.GetId()),
		body:  g.format(from, env.GetChannelId(), text),
		heard: time.Now(),
	}
	o.rel = meshRel{replyID: d.GetReplyId(), emoji: d.GetEmoji() != 0, from: from, text: string(d.GetPayload())}
	if p.GetRxTime() != 0 {
		o.heard = time.Unix(int64(p.GetRxTime()), 0)
	}
	if p.GetTo() != mesh.Broadcast {
		if mesh.NodeID(p.GetTo()) != radioID {
			return // a direct message between two other nodes
		}
		to, ok := g.directFromMesh(radioID, p, text)
		if !ok {
			return // a command, answered on the mesh, or for no one
		}
		o.dm, o.to = true, to
		o.queue = outQueue(to)
	} else {
		for _, r := range g.cfg.Rooms {
			if r.matches(o.channel, o.channelIdx) {
				o.queue = outQueue(r.JID.String())
				break
			}
		}
		if o.queue == "" {
			return // a channel no room is mapped to
		}
	}
	if g.keep(&o) {
		g.log.Debug("mesh message already bridged before; not posted again", "id", o.id)
		return
	}
	if rc, ok := g.roomOfQueue(o.queue); ok && !o.dm {
		g.mu.Lock()
		n := g.nodes[from]
		g.queueRelay(pendingRelay{room: rc, name: cmp.Or(n.LongName, n.ShortName, from), text: text, id: o.id, heardBy: o.heardBy})
		g.mu.Unlock()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.overflow) == 0 {
		select {
		case g.toRoom <- o:
			return
		default:
		}
	}
	if len(g.overflow) >= overflowMax {
		g.log.Warn("too many mesh messages waiting for the rooms; the oldest is dropped", "id", g.overflow[0].id, "waiting", len(g.overflow)+len(g.toRoom))
		g.overflow = g.overflow[1:]
	}
	g.overflow = append(g.overflow, o)
}

// overflowMax bounds the mesh texts waiting beyond toRoom, as the spool
// bounds a room's queue on disk.
const overflowMax = spool.DefaultMaxItems

// refill moves what overflowed into toRoom as far as it has room.
func (g *Gateway) refill() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for len(g.overflow) > 0 {
		select {
		case g.toRoom <- g.overflow[0]:
			g.overflow[0] = outbound{}
			g.overflow = g.overflow[1:]
		default:
			return
		}
	}
	g.overflow = nil
}

// format renders a mesh text with the sender's name from the node records.
func (g *Gateway) format(from, channel, text string) string {
	g.mu.Lock()
	n := g.nodes[from]
	g.mu.Unlock()
	name := n.LongName
	if name == "" {
		name = n.ShortName
	}
	if name == "" {
		name = from
	}
	return strings.NewReplacer("{name}", name, "{long}", n.LongName, "{short}", n.ShortName,
		"{id}", from, "{channel}", channel, "{text}", text).Replace(g.cfg.Format)
}

func (g *Gateway) onNode(_ string, payload []byte) {
	var n topics.NodeRecord
	if json.Unmarshal(payload, &n) != nil || n.ID == "" {
		return
	}
	g.mu.Lock()
	g.nodes[n.ID] = n
	g.mu.Unlock()
}

func (g *Gateway) onRadio(topic string, payload []byte) {
	id, ok := topics.RadioGateway(topic)
	if !ok {
		return
	}
	if len(payload) == 0 {
		g.forgetRadio(id)
		return
	}
	var r topics.RadioRecord
	if json.Unmarshal(payload, &r) != nil {
		return
	}
	g.mu.Lock()
	cameOnline := g.radios.setRecord(id, r)
	g.mu.Unlock()
	if cameOnline {
		g.offerAgain(id)
	}
}

// forgetRadio drops a radio its radio side cleared (the side now uses
// another radio, under another id). What waited for it in the outbox is
// dropped: the radio side kept whatever it took in.
func (g *Gateway) forgetRadio(id string) {
	g.mu.Lock()
	g.radios.forget(id)
	g.mu.Unlock()
	n := 0
	for _, k := range g.pendingSends() {
		if k.Target == id {
			g.sent(k.seq)
			n++
		}
	}
	if n > 0 {
		g.log.Warn("a radio side changed radios; what waited for the old one was dropped", "radio", id, "count", n)
	}
}

// airtimeNotice tells a room that what it sends to the mesh waits.
const airtimeNotice = "📡 The bridge has used its share of the mesh's airtime for now (the region's duty-cycle limit): " +
	"messages to the mesh wait and go out as airtime frees up."

func (g *Gateway) onStatus(topic string, payload []byte) {
	id, ok := topics.StatusGateway(topic)
	if !ok {
		return
	}
	var s topics.StatusRecord
	if len(payload) > 0 && json.Unmarshal(payload, &s) != nil {
		return
	}
	if len(payload) == 0 {
		g.forgetRadio(id)
		return
	}
	g.mu.Lock()
	cameOnline := g.radios.setStatus(id, s)
	up := g.radioUp()
	if up {
		clear(g.toldRadioDown)
	}
	blocked := false
	for _, r := range g.radios.byID {
		blocked = blocked || (r.localOnline() && r.status.AirtimeBlocked)
	}
	tell := blocked && !g.airBlocked
	g.airBlocked = blocked
	g.mu.Unlock()
	if tell {
		// Once per blocked period, to every room: all of them share the radio.
		for _, r := range g.cfg.Rooms {
			g.say(r.JID, airtimeNotice)
		}
	}
	if cameOnline {
		// A radio side that has just come up (or that this gateway has
		// just heard of) may have lost what was published to it before: it
		// started after, or died between taking a request in and keeping it.
		g.offerAgain(id)
	}
}

// radioUp reports whether some radio side is online; g.mu is held.
func (g *Gateway) radioUp() bool { return g.radios.anyOnline() }

// onResult collects a failed send for a word to the room, so the sender
// knows the mesh did not get it; refusals close together are told in one
// notice (see tellRefusals).
func (g *Gateway) onResult(_ string, payload []byte) {
	res, err := topics.ParseResult(payload)
	if err != nil || res.Origin != topics.OriginXMPP || g.onDirectResult(res) {
		return
	}
	id := res.RequestID
	now := time.Now()
	g.mu.Lock()
	info, ok := g.requests[id]
	var done uint64
	if ok && info.seq != 0 {
		// The radio link has it (or has refused it): the outbox need not
		// offer it again.
		done, info.seq = info.seq, 0
		g.requests[id] = info
	}
	for rid, ri := range g.requests {
		if ri.seq == 0 && now.Sub(ri.asked) > 10*time.Minute {
			delete(g.requests, rid)
		}
	}
	g.mu.Unlock()
	if done != 0 {
		g.sent(done) // the spool, without the lock held
	}
	if ok && res.Reason == meshpb.Routing_NONE && res.PacketID != 0 {
		g.learnWire(info, res.PacketID)
	}
	if !ok || res.Reason == meshpb.Routing_NONE {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.Stats.Refused.Add(1)
	b := g.refused[info.room.String()]
	if b == nil {
		b = &refusalBatch{room: info.room, first: now}
		g.refused[info.room.String()] = b
	}
	b.add(info, res.Reason, now)
}

func describe(e meshpb.Routing_Error) string {
	switch e {
	case meshpb.Routing_RATE_LIMIT_EXCEEDED:
		return "too much at once for the radio (its rate limit, or the bridge's queue is full); try again shortly"
	case meshpb.Routing_NO_INTERFACE:
		return "the bridge could not keep it (its disk is full or failing)"
	case meshpb.Routing_DUTY_CYCLE_LIMIT:
		return "the radio has used its airtime allowance (duty cycle); try again later"
	case meshpb.Routing_TOO_LARGE:
		return "too large for one packet"
	case meshpb.Routing_TIMEOUT:
		return "the radio did not confirm it"
	case meshpb.Routing_NO_CHANNEL:
		return "the radio has no such channel"
	case meshpb.Routing_MAX_RETRANSMIT:
		return "no node acknowledged it"
	}
	return strings.ToLower(strings.ReplaceAll(e.String(), "_", " "))
}

func (g *Gateway) say(room jid.JID, text string) {
	select {
	case g.notices <- notice{room, text}:
	default:
		g.log.Warn("notice queue full", "room", room.String(), "text", text)
	}
}

// toMesh sends a room message to the mesh as numbered chunks, on one
// radio of each mesh the bridge reaches.
func (g *Gateway) toMesh(rc Room, nick, body, msgKey string) {
	chunks, err := mesh.Chunks(nick, body, topics.MaxTextBytes)
	if err != nil {
		g.say(rc.JID, fmt.Sprintf("⚠ %s: not sent to the mesh: %v", nick, err))
		return
	}
	if len(chunks) == 0 {
		return
	}
	if len(chunks) > g.cfg.MaxChunks {
		g.Stats.Refused.Add(1)
		g.say(rc.JID, fmt.Sprintf("⚠ %s: your message would take %d mesh packets; at most %d are sent per message, so it was not sent. Please shorten it.",
			nick, len(chunks), g.cfg.MaxChunks))
		return
	}
	g.mu.Lock()
	targets := g.radios.transmitters(rc.JID.String(), nil)
	tell := !g.radioUp() && !g.toldRadioDown[rc.JID.String()]
	if tell {
		g.toldRadioDown[rc.JID.String()] = true
	}
	g.mu.Unlock()
	if tell {
		// Once per outage and room, not once per message.
		g.say(rc.JID, "📡 The radio is not connected right now; messages wait and go out when it is back.")
	}
	if len(targets) == 0 {
		targets = []string{""} // no radio known yet: waits for the first
	}
	if err := g.sendChunks(rc, nick, body, msgKey, chunks, targets); err != nil {
		g.say(rc.JID, fmt.Sprintf("⚠ %s: not sent to the mesh: %v", nick, err))
		return
	}
	g.Stats.RoomToMesh.Add(1)
	if targets[0] == "" {
		// A radio may have come online meanwhile, and have been offered
		// what waited before this was kept.
		g.assignWaiting()
	}
}

// pendingRelay is a mesh text that may be for the bridge's other meshes.
// It waits a moment first: a radio on the same mesh that hears it too, or
// another bridge's word, shows that those "other" meshes are its own.
type pendingRelay struct {
	room     Room
	name     string // the sender's
	text     string
	id       string // the mesh text's id, mesh-<from>-<packet id>
	heardBy  string // the radio of this gateway that heard it, or
	occupant string // the trusted bridge in the room that posted it
	due      time.Time
}

// maxPendingRelays bounds the texts waiting to be relayed.
const maxPendingRelays = 1024

// queueRelay puts a text in line to be relayed; g.mu is held.
func (g *Gateway) queueRelay(p pendingRelay) {
	if len(g.relays) >= maxPendingRelays {
		g.log.Warn("too many mesh texts waiting to be relayed to the other meshes; the oldest is not relayed", "id", g.relays[0].id)
		g.relays = g.relays[1:]
	}
	p.due = time.Now().Add(g.cfg.PeerGrace)
	g.relays = append(g.relays, p)
}

// relayLoop releases the relays whose wait is over, whether or not the
// XMPP server is reachable: meshes are linked through the broker.
func (g *Gateway) relayLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			g.releaseRelays(now)
			g.expireAmends(now)
		}
	}
}

// releaseRelays relays the texts whose wait is over to the meshes they
// turn out not to have come from.
func (g *Gateway) releaseRelays(now time.Time) {
	g.mu.Lock()
	var due []pendingRelay
	for len(g.relays) > 0 && !now.Before(g.relays[0].due) {
		due = append(due, g.relays[0])
		g.relays = g.relays[1:]
	}
	var targets [][]string
	for _, p := range due {
		room := p.room.JID.String()
		if p.heardBy != "" {
			targets = append(targets, g.radios.relayTargets(room, p.heardBy))
			continue
		}
		g.learnFromPeerPost(p.id, p.occupant)
		targets = append(targets, g.radios.peerRelayTargets(room, p.occupant))
	}
	g.mu.Unlock()
	for i, p := range due {
		g.relay(p.room, p.name, p.text, p.id, targets[i])
	}
}

// learnFromPeerPost: a trusted bridge (occupant) posted the mesh text id;
// if a radio of this gateway heard it too, it shares that bridge's mesh
// (when that bridge's radios are all on one). g.mu is held.
func (g *Gateway) learnFromPeerPost(id, occupant string) {
	var from, pid uint32
	if _, err := fmt.Sscanf(id, "mesh-%08x-%08x", &from, &pid); err != nil {
		return
	}
	if heardBy, ok := g.heardBy[uint64(from)<<32|uint64(pid)]; ok {
		g.sharesMeshWith(heardBy, occupant)
	}
}

// sharesMeshWith records that this gateway's radio heard what a trusted
// bridge (occupant) heard; g.mu is held.
func (g *Gateway) sharesMeshWith(radio, occupant string) {
	peerMesh := g.radios.peerMesh(occupant)
	if peerMesh == nil || has(peerMesh, radio) {
		return
	}
	if g.radios.heardOnAir(radio, peerMesh[0].id) {
		g.log.Info("another bridge in the room hears what this bridge's radio hears: one mesh", "radio", radio, "bridge", occupant, "its_radio", peerMesh[0].id)
	}
}

// relay sends a text from one mesh to the radios of the others (targets),
// once per text id.
func (g *Gateway) relay(rc Room, name, text, id string, targets []string) {
	key := "relay:" + id
	if len(targets) == 0 || !g.firstTime(key) {
		return
	}
	chunks, err := mesh.Chunks(name, text, topics.MaxTextBytes)
	if err != nil || len(chunks) == 0 || len(chunks) > g.cfg.MaxChunks {
		g.log.Info("a mesh text is too long to relay to the other meshes", "id", id)
		return
	}
	if err := g.sendChunks(rc, name, text, key, chunks, targets); err != nil {
		g.log.Warn("could not relay a mesh text to the other meshes", "id", id, "err", err)
		return
	}
	g.markSent(key)
	g.log.Debug("mesh text relayed to the other meshes", "id", id, "radios", targets)
}

func (g *Gateway) roomOfQueue(queue string) (Room, bool) {
	for _, r := range g.cfg.Rooms {
		if outQueue(r.JID.String()) == queue {
			return r, true
		}
	}
	return Room{}, false
}

// sendChunks keeps and publishes a message's chunks for each target radio
// ("" for the first radio to come online).
func (g *Gateway) sendChunks(rc Room, nick, body, msgKey string, chunks, targets []string) error {
	words := firstWords(body)
	for i, c := range chunks {
		for _, target := range targets {
			p := pendingSend{Target: target, Text: c, Room: rc.JID.String(), Nick: nick, Msg: msgKey,
				Words: words, Part: i + 1, Parts: len(chunks), Asked: time.Now()}
			if i == 0 {
				p.ReplyTo, p.ReplyID = g.replyOf(msgKey, target)
			}
			g.keepSend(p)
			if target == "" {
				continue
			}
			if err := g.publishSend(rc, p); err != nil {
				return err
			}
			g.Stats.ChunksToMesh.Add(1)
		}
	}
	return nil
}

// fromABridgeRadio reports whether a packet was sent by one of the bridge's
// own radios (a room message, or a relay from another mesh), which is never
// posted back; and learns from it, and from a text two radios both heard,
// which radios share a mesh.
func (g *Gateway) fromABridgeRadio(heardBy string, p *meshpb.MeshPacket) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	sender, bridged := g.radios.isBridgeRadio(p.GetFrom())
	if p.GetViaMqtt() {
		return bridged // came through MQTT: tells nothing of who hears whom
	}
	other := sender
	if !bridged {
		k := uint64(p.GetFrom())<<32 | uint64(p.GetId())
		if first, ok := g.heardBy[k]; ok {
			other = first
		} else {
			if len(g.heardBy) >= 4096 {
				clear(g.heardBy)
			}
			g.heardBy[k] = heardBy
		}
	}
	if other != "" && g.radios.heardOnAir(heardBy, other) {
		g.log.Info("two of the bridge's radios hear each other: one mesh, and a room message goes out on one of them", "radio", heardBy, "hears", other)
	}
	return bridged
}
