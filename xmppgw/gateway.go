package xmppgw

import (
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
	radio         topics.RadioRecord       // as last published
	status        topics.StatusRecord      // the radio link's, as last published
	airBlocked    bool                     // the radio link holds packets back for airtime
	requests      map[uint32]requestInfo   // send requests awaiting an outcome
	refused       map[string]*refusalBatch // by room: refusals not yet told
	seenMsgs      map[string]bool          // room messages already sent on to the mesh
	toldRadioDown map[string]bool          // rooms told, in this outage, that the radio is away
	mechanism     string                   // SASL mechanism of the last login
}

// outbound is a mesh text on its way to a room.
type outbound struct {
	channel    string
	channelIdx uint32
	id         string // deterministic from (from, packet id): a resend is recognisable
	body       string
	heard      time.Time
	posted     time.Time
	after      string // the room's id of the last message seen before posting
	dm         bool
	queue      string // spool queue; "" when not spooled
	seq        uint64
}

type notice struct {
	room jid.JID
	text string
}

type requestInfo struct {
	room  jid.JID
	nick  string
	msg   string // the room message's key, shared by its parts
	words string // the message's first words, to name it in a notice
	part  int    // 1-based
	parts int    // how many packets the message became
	asked time.Time
	seq   uint64 // in the spool's mesh outbox until the radio link reports on it; 0 once it has
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
		toldRadioDown: map[string]bool{}, refused: map[string]*refusalBatch{},
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
	policy := retry.Policy{Min: g.cfg.BackoffMin, Max: g.cfg.BackoffMax, Healthy: time.Minute, Tick: g.tick}
	return retry.Run(ctx, policy, g.log, "XMPP connection lost; reconnecting", func(ctx context.Context) error {
		err := g.session(ctx, rooms)
		g.connected.Store(false)
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
		{topics.BridgeRadio, g.onRadio},
		{topics.BridgeStatus, g.onStatus},
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
	d := p.GetDecoded()
	if d.GetPortnum() != meshpb.PortNum_TEXT_MESSAGE_APP || len(d.GetPayload()) == 0 {
		return
	}
	g.mu.Lock()
	radioID := g.radio.ID
	g.mu.Unlock()
	if radioID == "" {
		radioID = env.GetGatewayId()
	}
	from := mesh.NodeID(p.GetFrom())
	text := string(d.GetPayload())
	if d.GetEmoji() != 0 {
		text = "reacted " + text
	}
	o := outbound{
		channel: env.GetChannelId(), channelIdx: p.GetChannel(),
		id:    fmt.Sprintf("mesh-%08x-%08x", p.GetFrom(), p.GetId()),
		body:  g.format(from, env.GetChannelId(), text),
		heard: time.Now(),
	}
	if p.GetRxTime() != 0 {
		o.heard = time.Unix(int64(p.GetRxTime()), 0)
	}
	if p.GetTo() != mesh.Broadcast {
		if mesh.NodeID(p.GetTo()) != radioID {
			return // a direct message between two other nodes
		}
		if g.cfg.DMJID.String() == "" {
			g.log.Info("direct message to the bridge's radio not forwarded (no DM recipient configured)", "from", from)
			return
		}
		o.dm = true
		o.queue = outQueue(g.cfg.DMJID.String())
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

func (g *Gateway) onRadio(_ string, payload []byte) {
	var r topics.RadioRecord
	if json.Unmarshal(payload, &r) == nil {
		g.mu.Lock()
		g.radio = r
		g.mu.Unlock()
	}
}

// airtimeNotice tells a room that what it sends to the mesh waits.
const airtimeNotice = "📡 The bridge has used its share of the mesh's airtime for now (the region's duty-cycle limit): " +
	"messages to the mesh wait and go out as airtime frees up."

func (g *Gateway) onStatus(_ string, payload []byte) {
	var s topics.StatusRecord
	if json.Unmarshal(payload, &s) != nil {
		return
	}
	g.mu.Lock()
	wasUp := g.radioUp()
	g.status = s
	up := g.radioUp()
	if up {
		clear(g.toldRadioDown)
	}
	blocked := up && s.AirtimeBlocked
	tell := blocked && !g.airBlocked
	g.airBlocked = blocked
	g.mu.Unlock()
	if tell {
		// Once per blocked period, to every room: all of them share the radio.
		for _, r := range g.cfg.Rooms {
			g.say(r.JID, airtimeNotice)
		}
	}
	if up && !wasUp {
		// A radio link that has just come up (or that this gateway has
		// just heard of) may have lost what was published before: it
		// started after, or died between taking a request in and keeping it.
		g.offerAgain()
	}
}

// radioUp reports whether the radio link is online; g.mu is held.
func (g *Gateway) radioUp() bool { return g.status.State == topics.LinkOnline }

// onResult collects a failed send for a word to the room, so the sender
// knows the mesh did not get it; refusals close together are told in one
// notice (see tellRefusals).
func (g *Gateway) onResult(_ string, payload []byte) {
	res, err := topics.ParseResult(payload)
	if err != nil || res.Origin != topics.OriginXMPP {
		return
	}
	id := res.RequestID
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	info, ok := g.requests[id]
	if ok && info.seq != 0 {
		// The radio link has it (or has refused it): the outbox need not
		// offer it again.
		g.sent(info.seq)
		info.seq = 0
		g.requests[id] = info
	}
	for rid, ri := range g.requests {
		if ri.seq == 0 && now.Sub(ri.asked) > 10*time.Minute {
			delete(g.requests, rid)
		}
	}
	if !ok || res.Reason == meshpb.Routing_NONE {
		return
	}
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

// toMesh sends a room message to the mesh as numbered chunks.
func (g *Gateway) toMesh(r *room, nick, body, msgKey string) {
	chunks, err := mesh.Chunks(nick, body, topics.MaxTextBytes)
	if err != nil {
		g.say(r.cfg.JID, fmt.Sprintf("⚠ %s: not sent to the mesh: %v", nick, err))
		return
	}
	if len(chunks) == 0 {
		return
	}
	if len(chunks) > g.cfg.MaxChunks {
		g.Stats.Refused.Add(1)
		g.say(r.cfg.JID, fmt.Sprintf("⚠ %s: your message would take %d mesh packets; at most %d are sent per message, so it was not sent. Please shorten it.",
			nick, len(chunks), g.cfg.MaxChunks))
		return
	}
	g.mu.Lock()
	tell := !g.radioUp() && !g.toldRadioDown[r.cfg.JID.String()]
	if tell {
		g.toldRadioDown[r.cfg.JID.String()] = true
	}
	g.mu.Unlock()
	if tell {
		// Once per outage and room, not once per message.
		g.say(r.cfg.JID, "📡 The radio is not connected right now; messages wait and go out when it is back.")
	}
	words := firstWords(body)
	for i, c := range chunks {
		id := requestID(msgKey, i)
		req := topics.SendRequest{Origin: topics.OriginXMPP, ID: id, To: mesh.Broadcast, Channel: r.cfg.Channel,
			Data: &meshpb.Data{Portnum: meshpb.PortNum_TEXT_MESSAGE_APP, Payload: []byte(c)}}
		if r.cfg.ByIndex {
			req.Channel, req.ChannelIndex = "", r.cfg.Index
		}
		b, err := req.Marshal()
		if err == nil {
			info := requestInfo{room: r.cfg.JID, nick: nick, msg: msgKey, words: words, part: i + 1, parts: len(chunks), asked: time.Now()}
			g.keepSend(id, info, b, fmt.Sprintf("to-mesh:%s#%d", msgKey, i))
			err = g.bus.Publish(topics.MeshTX, b, false)
		}
		if err != nil {
			g.say(r.cfg.JID, fmt.Sprintf("⚠ %s: not sent to the mesh: %v", nick, err))
			return
		}
		g.Stats.ChunksToMesh.Add(1)
	}
	g.Stats.RoomToMesh.Add(1)
}
