package xmppgw

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/history"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/mux"
	"mellium.im/xmpp/ping"
	"mellium.im/xmpp/stanza"
)

// room is one bridged multi-user chat and what we know of our place in it.
type room struct {
	cfg        Room
	nick       string  // current nick: cfg.Nick, or with a suffix after a conflict
	occupant   jid.JID // room@service/nick we joined as
	occupantID string  // our XEP-0421 occupant id, when the room gives one
	joined     bool
	joinSent   time.Time
	rejoinAt   time.Time // zero: no rejoin scheduled
	gone       bool      // banned, or the room was destroyed: stop bridging it
	conflicts  int
	lastStanza string // the room's id of the last message we saw in it
	markSeq    uint64 // the spool entry holding lastStanza
	lastSeenAt time.Time
	joinedAt   time.Time
	removals   int        // times removed without staying long; grows the rejoin pause
	backlog    []outbound // mesh texts waiting for the room
	unacked    []outbound // posted, not yet reflected by the room, in order
}

// ack removes a reflected message from the unacked list.
func (r *room) ack(id string) (outbound, bool) {
	for i, o := range r.unacked {
		if o.id == id {
			r.unacked = append(r.unacked[:i], r.unacked[i+1:]...)
			return o, true
		}
	}
	return outbound{}, false
}

// event is what the stanza handlers hand to the session loop.
type event struct {
	msg  *inMessage
	pres *inPresence
	lost *room // a self-ping says we are no longer in this room
}

// session runs one XMPP connection: connect, join the rooms, bridge, until
// the connection fails or ctx ends.
func (g *Gateway) session(ctx context.Context, rooms []*room) error {
	s, err := g.connect(ctx)
	if err != nil {
		return err
	}
	g.Stats.Connects.Add(1)
	g.connected.Store(true)
	g.log.Info("XMPP connected", "jid", s.LocalAddr().String())

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := make(chan event, 256)
	push := func(e event) {
		select {
		case events <- e:
		case <-ctx.Done():
		}
	}
	// Handlers run inside Serve: they decode and hand off, never wait.
	onMessage := func(_ stanza.Message, t xmlstream.TokenReadEncoder) error {
		var m inMessage
		if err := xml.NewTokenDecoder(t).Decode(&m); err != nil {
			return nil
		}
		m.received = time.Now()
		push(event{msg: &m})
		return nil
	}
	onPresence := func(_ stanza.Presence, t xmlstream.TokenReadEncoder) error {
		var p inPresence
		if err := xml.NewTokenDecoder(t).Decode(&p); err != nil {
			return nil
		}
		push(event{pres: &p})
		return nil
	}
	arch := &archive{}
	m := mux.New(stanza.NSClient,
		ping.Handle(),
		mux.MessageFunc(stanza.NormalMessage, xml.Name{Space: history.NS, Local: "result"}, arch.handle),
		mux.MessageFunc(stanza.GroupChatMessage, xml.Name{Local: "body"}, onMessage),
		mux.MessageFunc(stanza.ErrorMessage, xml.Name{Local: "error"}, onMessage),
		mux.PresenceFunc(stanza.AvailablePresence, xml.Name{Space: nsMUCUser, Local: "x"}, onPresence),
		mux.PresenceFunc(stanza.UnavailablePresence, xml.Name{Space: nsMUCUser, Local: "x"}, onPresence),
		mux.PresenceFunc(stanza.ErrorPresence, xml.Name{Local: "error"}, onPresence),
	)
	g.arch = arch
	served := make(chan error, 1)
	serveDone := make(chan struct{})
	go func() {
		defer close(serveDone)
		served <- s.Serve(m)
	}()
	defer func() {
		cancel()
		// Say goodbye if the stream still takes writes, then close the
		// socket, which ends Serve. (SetCloseDeadline would race with Serve.)
		_ = s.Conn().SetWriteDeadline(time.Now().Add(2 * time.Second))
		_ = s.Close()
		_ = s.Conn().Close()
		<-serveDone
	}()

	for _, r := range rooms {
		r.joined, r.rejoinAt = false, time.Time{}
		if !r.gone {
			if err := g.join(ctx, s, r); err != nil {
				return err
			}
		}
	}

	pingFailed := make(chan error, 1)
	var pinging bool
	pingDone := make(chan struct{}, 1)
	lastPing := time.Now()
	lastSelfPing := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()

	for {
		select {
		case <-ctx.Done():
			bye, cancelBye := context.WithTimeout(context.Background(), 2*time.Second)
			for _, r := range rooms {
				if r.joined {
					_ = s.Encode(bye, joinPresence{To: r.occupant.String(), Type: "unavailable"})
				}
			}
			cancelBye()
			return ctx.Err()
		case err := <-served:
			if err == nil {
				err = errors.New("server closed the stream")
			}
			return fmt.Errorf("XMPP stream ended: %w", err)
		case err := <-pingFailed:
			return err
		case <-pingDone:
			pinging = false
		case e := <-events:
			if err := g.handleEvent(ctx, s, rooms, e); err != nil {
				return err
			}
		case o := <-g.toRoom:
			if err := g.deliver(ctx, s, rooms, o); err != nil {
				return err
			}
		case n := <-g.notices:
			if err := write(ctx, s, outMessage{ID: randomID(), To: n.room.String(), Type: "groupchat", Body: n.text}); err != nil {
				return err
			}
		case now := <-tick.C:
			g.tick()
			if !pinging && now.Sub(lastPing) >= g.cfg.PingInterval {
				lastPing, pinging = now, true
				go g.keepalive(ctx, s, pingFailed, pingDone)
			}
			selfPing := now.Sub(lastSelfPing) >= g.cfg.SelfPingInterval
			if selfPing {
				lastSelfPing = now
			}
			for _, r := range rooms {
				switch {
				case r.gone:
				case !r.joined && !r.rejoinAt.IsZero() && now.After(r.rejoinAt):
					r.rejoinAt = time.Time{}
					if err := g.join(ctx, s, r); err != nil {
						return err
					}
				case !r.joined && r.rejoinAt.IsZero() && now.Sub(r.joinSent) > 30*time.Second:
					g.log.Warn("no answer to joining the room; trying again", "room", r.cfg.JID.String())
					if err := g.join(ctx, s, r); err != nil {
						return err
					}
				case r.joined && selfPing:
					go g.selfPing(ctx, s, r, r.occupant, events)
				}
			}
		}
	}
}

// keepalive pings the server; a missing answer means the link is dead,
// even if writes still succeed into the kernel's buffer.
func (g *Gateway) keepalive(ctx context.Context, s *xmpp.Session, failed chan<- error, done chan<- struct{}) {
	defer func() { done <- struct{}{} }()
	pctx, cancel := context.WithTimeout(ctx, g.cfg.PingTimeout)
	defer cancel()
	if err := ping.Send(pctx, s, g.cfg.JID.Domain()); err != nil && ctx.Err() == nil {
		select {
		case failed <- fmt.Errorf("XMPP server did not answer a ping within %v: %w", g.cfg.PingTimeout, err):
		default:
		}
		// Closing the socket also frees a session loop stuck in a write.
		_ = s.Conn().Close()
	}
}

// selfPing checks that the room still counts us as an occupant (XEP-0410):
// a room that silently dropped us answers not-acceptable or item-not-found,
// and we rejoin. Other errors and timeouts are the server keepalive's call.
func (g *Gateway) selfPing(ctx context.Context, s *xmpp.Session, r *room, occupant jid.JID, events chan<- event) {
	pctx, cancel := context.WithTimeout(ctx, g.cfg.PingTimeout)
	defer cancel()
	err := ping.Send(pctx, s, occupant)
	var se stanza.Error
	if errors.As(err, &se) && (se.Condition == stanza.NotAcceptable || se.Condition == stanza.ItemNotFound) {
		select {
		case events <- event{lost: r}:
		case <-ctx.Done():
		}
	}
}

// join sends our presence to the room, asking for no history.
func (g *Gateway) join(ctx context.Context, s *xmpp.Session, r *room) error {
	occ, err := r.cfg.JID.WithResource(r.nick)
	if err != nil {
		r.gone = true
		g.log.Error("invalid nick for the room", "room", r.cfg.JID.String(), "nick", r.nick, "err", err)
		return nil
	}
	r.occupant, r.joinSent = occ, time.Now()
	g.log.Debug("joining room", "room", r.cfg.JID.String(), "nick", r.nick)
	return write(ctx, s, joinPresence{ID: randomID(), To: occ.String(), X: &mucX{}})
}

func (g *Gateway) roomOf(rooms []*room, from jid.JID) *room {
	bare := from.Bare()
	for _, r := range rooms {
		if r.cfg.JID.Equal(bare) {
			return r
		}
	}
	return nil
}

func (g *Gateway) handleEvent(ctx context.Context, s *xmpp.Session, rooms []*room, e event) error {
	if r := e.lost; r != nil {
		if r.joined {
			g.log.Warn("the room no longer counts us as an occupant; rejoining", "room", r.cfg.JID.String())
			r.joined = false
			return g.join(ctx, s, r)
		}
		return nil
	}
	if p := e.pres; p != nil {
		if r := g.roomOf(rooms, p.From); r != nil {
			return g.onRoomPresence(ctx, s, r, p)
		}
		return nil
	}
	msg := e.msg
	r := g.roomOf(rooms, msg.From)
	if r == nil {
		return nil
	}
	if msg.Type == "error" {
		cond := stanza.Condition("")
		if msg.Error != nil {
			cond = msg.Error.Condition
		}
		if cond == stanza.NotAcceptable || cond == stanza.ItemNotFound {
			// The room forgot us: rejoin, and the message is posted again.
			if r.joined {
				g.log.Warn("the room says we are not in it; rejoining", "room", r.cfg.JID.String(), "reason", string(cond))
				r.joined = false
				return g.join(ctx, s, r)
			}
			return nil
		}
		// Refused for good (we may not speak, too fast, too big): resending
		// would be refused again.
		if o, ok := r.ack(msg.ID); ok {
			g.delivered(o)
			g.log.Error("the room refused a mesh message; it is not posted", "room", r.cfg.JID.String(), "id", msg.ID, "reason", string(cond))
		}
		return nil
	}
	return g.onRoomMessage(ctx, s, r, msg)
}

func (g *Gateway) onRoomPresence(ctx context.Context, s *xmpp.Session, r *room, p *inPresence) error {
	self := p.has(statusSelf) || p.From.Equal(r.occupant)
	switch {
	case p.Type == "error":
		return g.onJoinError(ctx, s, r, p)
	case p.Type == "unavailable" && self:
		r.joined = false
		switch {
		case p.X != nil && p.X.Destroy != nil:
			r.gone = true
			g.log.Error("room was destroyed; no longer bridging it", "room", r.cfg.JID.String(), "reason", p.reason())
		case p.has(statusBanned):
			r.gone = true
			g.log.Error("banned from the room; no longer bridging it", "room", r.cfg.JID.String(), "reason", p.reason())
		case p.has(statusNickChanged):
			if p.X != nil && len(p.X.Items) > 0 && p.X.Items[0].Nick != "" {
				r.nick = p.X.Items[0].Nick
				r.occupant, _ = r.cfg.JID.WithResource(r.nick)
				r.joined = true
			}
		case p.has(statusKicked), p.has(statusTechnicalKick), p.has(statusShutdown), p.has(statusAffiliation), p.has(statusMembersOnly):
			g.log.Warn("removed from the room; rejoining after a pause", "room", r.cfg.JID.String(), "reason", p.reason(), "in", g.scheduleRejoin(r))
		default:
			g.log.Warn("left the room unexpectedly; rejoining after a pause", "room", r.cfg.JID.String(), "in", g.scheduleRejoin(r))
		}
		return nil
	case self && !r.joined:
		if p.has(statusNickAssigned) {
			r.nick = p.From.Resourcepart()
		}
		r.occupant = p.From
		r.joined, r.conflicts, r.joinedAt = true, 0, time.Now()
		if p.OccupantID != nil {
			r.occupantID = p.OccupantID.ID
		}
		g.log.Info("joined room", "room", r.cfg.JID.String(), "nick", r.nick, "channel", r.cfg.label())
		return g.flush(ctx, s, r)
	}
	return nil
}

func (g *Gateway) onJoinError(ctx context.Context, s *xmpp.Session, r *room, p *inPresence) error {
	cond := stanza.Condition("")
	if p.Error != nil {
		cond = p.Error.Condition
	}
	switch cond {
	case stanza.Conflict:
		r.conflicts++
		if r.conflicts > 5 {
			r.gone = true
			g.log.Error("nick taken, and so are its variants; not bridging the room", "room", r.cfg.JID.String(), "nick", r.cfg.Nick)
			return nil
		}
		r.nick = r.cfg.Nick + strconv.Itoa(r.conflicts+1)
		g.log.Warn("nick taken in the room; trying another", "room", r.cfg.JID.String(), "nick", r.nick)
		return g.join(ctx, s, r)
	case stanza.Forbidden, stanza.NotAuthorized, stanza.RegistrationRequired, stanza.NotAllowed:
		r.gone = true
		g.log.Error("the room refuses us; not bridging it", "room", r.cfg.JID.String(), "reason", string(cond))
	default:
		g.log.Warn("could not join the room; trying again later", "room", r.cfg.JID.String(), "reason", string(cond), "in", g.scheduleRejoin(r))
	}
	return nil
}

// scheduleRejoin sets when to try the room again: after RejoinDelay, doubled
// for each removal that did not let us stay a minute, up to BackoffMax, so a
// room that keeps removing us is not hammered.
func (g *Gateway) scheduleRejoin(r *room) time.Duration {
	if !r.joinedAt.IsZero() && time.Since(r.joinedAt) > time.Minute {
		r.removals = 0
	}
	d := g.cfg.RejoinDelay << min(r.removals, 10)
	d = min(d, g.cfg.BackoffMax)
	r.removals++
	r.rejoinAt = time.Now().Add(d)
	return d
}

// onRoomMessage handles a groupchat message: our own reflection acks what
// we sent; anything else from a person goes to the mesh.
func (g *Gateway) onRoomMessage(ctx context.Context, s *xmpp.Session, r *room, msg *inMessage) error {
	sid := msg.stanzaID(r.cfg.JID)
	if sid != "" && msg.Delay == nil {
		g.remember(r, sid)
	}
	oid := msg.originID()
	for _, id := range []string{oid, msg.ID} {
		if o, ok := r.ack(id); id != "" && ok {
			g.delivered(o)
			g.Stats.Reflections.Add(1)
			return nil
		}
	}
	occID := ""
	if msg.OccupantID != nil {
		occID = msg.OccupantID.ID
	}
	switch {
	case msg.Delay != nil:
		return nil // history, not live
	case msg.From.Resourcepart() == "":
		return nil // the room itself
	case g.ours(r, msg.From, occID, oid, msg.ID):
		return nil
	}
	return g.fromRoom(ctx, s, r, msg.From, msg.body(), roomMsgKey(r, sid, oid, msg.ID))
}

// ours reports whether a room message is the bridge's own: by occupant id
// (spoof-resistant) where the room gives one, by our occupant JID, and by
// the ids we set on mesh texts, never by the nick string alone.
func (g *Gateway) ours(r *room, from jid.JID, occupantID, originID, id string) bool {
	switch {
	case r.occupantID != "" && occupantID == r.occupantID:
		return true
	case r.occupantID == "" && from.Equal(r.occupant):
		return true
	case strings.HasPrefix(originID, "mesh-"), strings.HasPrefix(id, "mesh-"):
		return true // a mesh text: ours from an earlier session, or another bridge's
	case strings.HasPrefix(id, "sr-"):
		return true // one of our notices
	}
	return false
}

// roomMsgKey names a room message for dedupe: by the room's own id when it
// gives one, else by the sender's ids.
func roomMsgKey(r *room, stanzaID, originID, id string) string {
	switch {
	case stanzaID != "":
		return "xmpp:" + r.cfg.JID.String() + ":" + stanzaID
	case originID != "":
		return "xmpp:" + r.cfg.JID.String() + ":o:" + originID
	}
	return "xmpp:" + r.cfg.JID.String() + ":i:" + id
}

// fromRoom sends a person's room message to the mesh, once.
func (g *Gateway) fromRoom(ctx context.Context, s *xmpp.Session, r *room, from jid.JID, body, key string) error {
	body = strings.TrimSpace(body)
	if body == "" || !g.firstTime(key) {
		return nil
	}
	nick := from.Resourcepart()
	if cmd, ok := strings.CutPrefix(body, "!"); ok && isCommand(cmd) {
		return g.command(ctx, s, r, nick, cmd)
	}
	g.toMesh(r, nick, body, key)
	return nil
}

func isCommand(s string) bool {
	word, _, _ := strings.Cut(s, " ")
	if word == "" {
		return false
	}
	for _, c := range word {
		if c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}

// command answers the bridge's own commands; none of them reach the mesh.
func (g *Gateway) command(ctx context.Context, s *xmpp.Session, r *room, nick, cmd string) error {
	word, _, _ := strings.Cut(cmd, " ")
	var reply string
	switch word {
	case "status":
		g.mu.Lock()
		up, radio := g.radioUp, g.radioID
		g.mu.Unlock()
		state := "disconnected"
		if up {
			state = "connected"
		}
		reply = fmt.Sprintf("Radio %s is %s; bridging channel %s.", radio, state, r.cfg.label())
	default:
		reply = fmt.Sprintf("%s: unknown bridge command !%s (known: !status). Commands are not sent to the mesh.", nick, word)
	}
	return write(ctx, s, outMessage{ID: randomID(), To: r.cfg.JID.String(), Type: "groupchat", Body: reply})
}

// deliver posts a mesh text to its room, or keeps it until the room is joined.
func (g *Gateway) deliver(ctx context.Context, s *xmpp.Session, rooms []*room, o outbound) error {
	if o.dm {
		g.Stats.MeshToRoom.Add(1)
		return write(ctx, s, outMessage{ID: o.id, To: g.cfg.DMJID.String(), Type: "chat", Body: o.body, OriginID: &originID{o.id}})
	}
	var r *room
	for _, rr := range rooms {
		if outQueue(rr.cfg.JID.String()) == o.queue {
			r = rr
			break
		}
	}
	if r == nil || r.gone {
		return nil // a channel no room is mapped to
	}
	if !r.joined {
		r.backlog = append(r.backlog, o)
		return nil
	}
	return g.post(ctx, s, r, o)
}

func (g *Gateway) post(ctx context.Context, s *xmpp.Session, r *room, o outbound) error {
	if o.posted.IsZero() {
		o.posted, o.after = time.Now(), r.lastStanza
	}
	r.unacked = append(r.unacked, o)
	g.Stats.MeshToRoom.Add(1)
	m := outMessage{ID: o.id, To: r.cfg.JID.String(), Type: "groupchat", Body: o.body, OriginID: &originID{o.id}}
	if time.Since(o.heard) > 30*time.Second {
		// Late (the room or the link was away): say when it was heard.
		m.Delay = &delayElem{Stamp: o.heard.UTC().Format(time.RFC3339), From: g.cfg.JID.Bare().String()}
	}
	return write(ctx, s, m)
}

// dropArchived removes from the unacked list what the room's archive
// already has. ok is false when the archive cannot be read.
func (g *Gateway) dropArchived(ctx context.Context, s *xmpp.Session, r *room) (ok bool) {
	after := r.unacked[0].after
	if after == roomStart {
		after = "" // the room's first messages: search by time instead
	}
	seen, ok := g.arch.seenSince(ctx, s, r, after, r.unacked[0].posted.Add(-time.Minute))
	if !ok {
		return false
	}
	kept := r.unacked[:0]
	for _, o := range r.unacked {
		if seen[o.id] {
			g.delivered(o)
			g.Stats.Reflections.Add(1)
			continue
		}
		kept = append(kept, o)
	}
	r.unacked = kept
	return true
}

// flush posts, after a (re)join, what waited for the room: first what was
// posted but never reflected (the connection died under it), with the same
// ids so it is recognisable, then what arrived while we were out.
func (g *Gateway) flush(ctx context.Context, s *xmpp.Session, r *room) error {
	if len(r.unacked) > 0 {
		ok := g.dropArchived(ctx, s, r)
		if ok && len(r.unacked) > 0 && g.cfg.ResendGrace > 0 {
			// The old connection's last stanzas may still be on their way
			// through the server (a link that froze rather than broke): give
			// them a moment to land in the archive before resending.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(g.cfg.ResendGrace):
			}
			ok = g.dropArchived(ctx, s, r)
		}
		if ok {
			g.log.Info("resending what the room did not get before the connection dropped", "room", r.cfg.JID.String(), "resend", len(r.unacked))
		} else {
			g.log.Warn("the room keeps no archive; resending unconfirmed messages, which may show twice", "room", r.cfg.JID.String(), "count", len(r.unacked))
		}
	}
	if err := g.catchUp(ctx, s, r); err != nil {
		return err
	}
	pending := append(r.unacked, r.backlog...)
	r.unacked, r.backlog = nil, nil
	for _, o := range pending {
		if err := g.post(ctx, s, r, o); err != nil {
			return err
		}
	}
	return nil
}

func randomID() string {
	return "sr-" + strconv.FormatUint(rand.Uint64(), 36)
}

// write sends one stanza, bounded in time: a peer that stops reading must
// not wedge the session loop.
func write(ctx context.Context, s *xmpp.Session, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	return s.Encode(ctx, v)
}
