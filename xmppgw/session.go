package xmppgw

import (
	"context"
	"encoding/xml"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
)

// session runs one XMPP connection: connect, join the rooms, bridge, until
// the connection fails or ctx ends. The connection, and all it started, is
// closed before session returns.
func (g *Gateway) session(ctx context.Context, rooms []*room) error {
	c, err := openConn(ctx, &g.cfg)
	if err != nil {
		return err
	}
	defer c.close()
	g.Stats.Connects.Add(1)
	g.connected.Store(true)
	g.sessionUp()
	g.mu.Lock()
	g.mechanism = c.mechanism
	g.radios.clearPeers()
	g.mu.Unlock()
	for _, r := range rooms {
		clear(r.trusted)
	}
	g.log.Info("XMPP connected", "jid", c.s.LocalAddr().String(), "mechanism", c.mechanism)
	// Available, so that what people write to the bridge's bare JID
	// reaches it rather than the server's offline store.
	if err := c.send(ctx, availablePresence{ID: randomID()}); err != nil {
		return err
	}

	for _, r := range rooms {
		if r.reconnected() == stepJoin {
			if err := g.join(ctx, c, r); err != nil {
				return err
			}
		}
	}

	lastPing := time.Now()
	lastSelfPing := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()

	for {
		select {
		case <-ctx.Done():
			for _, r := range rooms {
				if r.joined() {
					bye, release := callCtx(context.Background(), 2*time.Second)
					_ = c.s.Encode(bye, joinPresence{To: r.occupant.String(), Type: "unavailable"})
					release()
				}
			}
			return ctx.Err()
		case err := <-c.lost:
			return err
		case e := <-c.events:
			if err := g.handleEvent(ctx, c, rooms, e); err != nil {
				return err
			}
		case o := <-g.toRoom:
			g.refill()
			if err := g.deliver(ctx, c, rooms, o); err != nil {
				return err
			}
		case n := <-g.notices:
			if err := c.send(ctx, outMessage{ID: randomID(), To: n.room.String(), Type: "groupchat", Body: n.text}); err != nil {
				return err
			}
		case m := <-g.dm.out:
			if err := c.send(ctx, m); err != nil {
				return err
			}
		case now := <-tick.C:
			g.tick()
			g.publishRooms(rooms)
			g.tellRefusals(now)
			g.releaseRelays(now)
			if now.Sub(lastPing) >= g.cfg.PingInterval && c.keepalive() {
				lastPing = now
			}
			selfPing := now.Sub(lastSelfPing) >= g.cfg.SelfPingInterval
			if selfPing {
				lastSelfPing = now
			}
			for _, r := range rooms {
				switch {
				case r.due(now):
					if err := g.join(ctx, c, r); err != nil {
						return err
					}
				case r.joined() && selfPing:
					c.selfPing(r.occupant)
				}
				if r.joined() {
					if err := g.advertise(ctx, c, r); err != nil {
						return err
					}
					if err := g.releaseHeld(ctx, c, r, now); err != nil {
						return err
					}
					if err := g.releaseWaiting(ctx, c, r); err != nil {
						return err
					}
				}
			}
		}
	}
}

// join sends our presence to the room, asking for no history.
func (g *Gateway) join(ctx context.Context, c *conn, r *room) error {
	if !r.beginJoin(time.Now()) {
		return nil
	}
	// The room tells us its occupants anew as we join.
	g.mu.Lock()
	g.radios.dropRoomPeers(r.cfg.JID.String())
	g.mu.Unlock()
	clear(r.trusted)
	g.forgetOccupants(r.cfg.JID.String())
	adv, key := g.advert()
	r.advertised = key
	status, _ := g.statusFor(r.cfg.JID.String(), time.Now(), true)
	return c.send(ctx, joinPresence{ID: randomID(), To: r.occupant.String(), X: &mucX{}, Radios: adv, Status: status})
}

// advert is what this bridge says about its radios in its room presence,
// and that as a string to tell a change by.
func (g *Gateway) advert() (*radiosAdvert, string) {
	g.mu.Lock()
	adv := g.radios.advert()
	g.mu.Unlock()
	b, _ := xml.Marshal(adv)
	return adv, string(b)
}

// advertise tells the room, in a presence update, when this bridge's
// radios have changed since it last said, and when its status has (at
// most once every Config.StatusInterval): one presence carries both.
func (g *Gateway) advertise(ctx context.Context, c *conn, r *room) error {
	adv, key := g.advert()
	status, due := g.statusFor(r.cfg.JID.String(), time.Now(), key != r.advertised)
	if !due {
		return nil
	}
	r.advertised = key
	return c.send(ctx, joinPresence{ID: randomID(), To: r.occupant.String(), Radios: adv, Status: status})
}

// notePeer takes in what another occupant's presence says about the radios
// it sends through, if it is a bridge this one trusts (Config.PeerBridges,
// by the real JID the room shows): anyone else could claim radios to
// silence a mesh user or cut the room off from a mesh.
func (g *Gateway) notePeer(r *room, p *inPresence) {
	occupant := p.From.String()
	trusted := p.Type == "" && g.trusts(p)
	var adv *radiosAdvert
	if trusted {
		r.trusted[occupant] = true
		if adv = p.Radios; adv != nil && len(adv.Radios) > maxAdvertRadios {
			adv = &radiosAdvert{Radios: adv.Radios[:maxAdvertRadios]}
		}
	} else {
		delete(r.trusted, occupant)
	}
	g.mu.Lock()
	g.radios.peerSays(occupant, adv)
	g.mu.Unlock()
}

// trusts reports whether an occupant's real JID, as the room shows it, is
// one of the bridges this one cooperates with.
func (g *Gateway) trusts(p *inPresence) bool {
	if p.X == nil || len(p.X.Items) == 0 || p.X.Items[0].JID == "" {
		return false
	}
	real, err := jid.Parse(p.X.Items[0].JID)
	if err != nil {
		return false
	}
	for _, b := range g.cfg.PeerBridges {
		if b.Bare().Equal(real.Bare()) {
			return true
		}
	}
	return false
}

// releaseHeld posts the held mesh texts whose time has come, and drops
// those another bridge has posted meanwhile.
func (g *Gateway) releaseHeld(ctx context.Context, c *conn, r *room, now time.Time) error {
	for len(r.held) > 0 {
		h := r.held[0]
		switch {
		case r.peerPosted[h.o.id] != "":
			g.postedByPeer(h.o, r.peerPosted[h.o.id])
		case now.Before(h.due):
			return nil
		default:
			g.log.Info("another bridge on the mesh did not post a mesh text in time; posting it", "room", r.cfg.JID.String(), "id", h.o.id)
			if err := g.post(ctx, c, r, h.o); err != nil {
				r.held = r.held[1:]
				return err
			}
		}
		r.held = r.held[1:]
	}
	return nil
}

// postedByPeer drops a mesh text a trusted bridge (occupant) posted; it
// heard it too, so its radios share the mesh.
func (g *Gateway) postedByPeer(o outbound, occupant string) {
	g.mu.Lock()
	g.sharesMeshWith(o.heardBy, occupant)
	g.mu.Unlock()
	g.delivered(o)
	g.Stats.PostedByPeer.Add(1)
	g.log.Debug("another bridge in the room posted the mesh text", "id", o.id)
}

// act does what a room's state machine asked for.
func (g *Gateway) act(ctx context.Context, c *conn, r *room, s step) error {
	switch s {
	case stepJoin:
		return g.join(ctx, c, r)
	case stepFlush:
		return g.flush(ctx, c, r)
	}
	return nil
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

func (g *Gateway) handleEvent(ctx context.Context, c *conn, rooms []*room, e event) error {
	if e.lost != nil {
		if r := g.roomOf(rooms, *e.lost); r != nil {
			return g.act(ctx, c, r, r.forgotten("the room no longer counts us as an occupant; rejoining"))
		}
		return nil
	}
	if p := e.pres; p != nil {
		if r := g.roomOf(rooms, p.From); r != nil {
			g.noteOccupant(r, p)
			if p.Type != "error" && p.From.Resourcepart() != "" && !p.From.Equal(r.occupant) && !p.has(statusSelf) {
				g.notePeer(r, p)
			}
			return g.act(ctx, c, r, r.onPresence(p))
		}
		return nil
	}
	msg := e.msg
	if msg.Type == "chat" {
		return g.onDirect(ctx, c, rooms, msg)
	}
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
			return g.act(ctx, c, r, r.forgotten("the room says we are not in it; rejoining", "reason", string(cond)))
		}
		// Refused for good (we may not speak, too fast, too big): resending
		// would be refused again.
		if o, ok := r.ack(msg.ID); ok {
			g.delivered(o)
			g.log.Error("the room refused a mesh message; it is not posted", "room", r.cfg.JID.String(), "id", msg.ID, "reason", string(cond))
		}
		return nil
	}
	return g.onRoomMessage(ctx, c, r, msg)
}

// onRoomMessage handles a groupchat message: our own reflection acks what
// we sent; anything else from a person goes to the mesh.
func (g *Gateway) onRoomMessage(ctx context.Context, c *conn, r *room, msg *inMessage) error {
	sid := msg.stanzaID(r.cfg.JID)
	// The room's position moves past a message only once it has been dealt
	// with: a crash before that finds it again in the archive.
	if sid != "" && msg.Delay == nil {
		defer func() { g.remember(r, sid) }()
	}
	oid := msg.originID()
	for _, id := range []string{oid, msg.ID} {
		if o, ok := r.ack(id); id != "" && ok {
			g.reflected(r, o, sid)
			g.delivered(o)
			g.Stats.Reflections.Add(1)
			return nil
		}
	}
	occID := ""
	if msg.OccupantID != nil {
		occID = msg.OccupantID.ID
	}
	if strings.HasPrefix(oid, "mesh-") && r.trusted[msg.From.String()] {
		// A trusted bridge's post of a mesh text: not this bridge's to
		// post again, and for this bridge's other meshes.
		r.notePeerPost(oid, msg.From.String())
		// A late post carries the bridge's own delay; the room's history
		// carries the room's.
		history := msg.Delay != nil && (msg.Delay.From == "" || msg.Delay.From == r.cfg.JID.String())
		g.mu.Lock()
		g.learnFromPeerPost(oid, msg.From.String())
		if !history && msg.Reactions == nil { // a reaction has no text to relay
			name, text, ok := strings.Cut(strings.TrimSpace(msg.body()), ": ")
			if !ok {
				name, text = msg.From.Resourcepart(), msg.body()
			}
			g.queueRelay(pendingRelay{room: r.cfg, name: name, text: text, id: oid, occupant: msg.From.String()})
		}
		g.mu.Unlock()
	}
	switch {
	case msg.Delay != nil:
		return nil // history, not live
	case msg.From.Resourcepart() == "":
		return nil // the room itself
	case g.ours(r, msg.From, occID, oid, msg.ID):
		return nil
	}
	return g.fromRoomMsg(ctx, c, r, roomMsg{from: msg.From, body: msg.body(), key: roomMsgKey(r, sid, oid, msg.ID),
		sid: sid, oid: oid, id: msg.ID, occupID: occID, ext: msg.msgExt})
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
func (g *Gateway) fromRoom(ctx context.Context, c *conn, r *room, from jid.JID, body, key string) error {
	body = strings.TrimSpace(body)
	if body == "" || !g.firstTime(key) {
		return nil
	}
	nick := from.Resourcepart()
	if cmd, ok := strings.CutPrefix(body, "!"); ok && isCommand(cmd) {
		g.markSent(key)
		return g.command(ctx, c, r, nick, cmd)
	}
	g.toMesh(r.cfg, nick, body, key)
	g.markSent(key)
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
func (g *Gateway) command(ctx context.Context, c *conn, r *room, nick, cmd string) error {
	word, _, _ := strings.Cut(cmd, " ")
	reply := g.commandReply(cmd, r.cfg.JID.String(), nick, false)
	if word == "status" {
		reply = fmt.Sprintf("%s Bridging channel %s.", reply, r.cfg.label())
	}
	return c.send(ctx, outMessage{ID: randomID(), To: r.cfg.JID.String(), Type: "groupchat", Body: reply})
}

// deliver posts a mesh text to its room, or keeps it until the room is joined.
func (g *Gateway) deliver(ctx context.Context, c *conn, rooms []*room, o outbound) error {
	if o.dm {
		g.Stats.MeshToRoom.Add(1)
		return c.send(ctx, outMessage{ID: o.id, To: o.to, Type: "chat", Body: o.body, OriginID: &originID{o.id}})
	}
	var r *room
	for _, rr := range rooms {
		if outQueue(rr.cfg.JID.String()) == o.queue {
			r = rr
			break
		}
	}
	if r == nil || r.gone() {
		return nil // a channel no room is mapped to
	}
	if !r.joined() {
		r.backlog = append(r.backlog, o)
		return nil
	}
	return g.postOrHold(ctx, c, r, o)
}

// postOrHold posts a mesh text to a room we are in, unless a trusted bridge
// posted it already, or is the one to post it (then it waits a moment).
func (g *Gateway) postOrHold(ctx context.Context, c *conn, r *room, o outbound) error {
	if occ, ok := r.peerPosted[o.id]; ok {
		g.postedByPeer(o, occ)
		return nil
	}
	g.mu.Lock()
	wait := g.radios.deferTo(o.heardBy, r.occupant.String())
	g.mu.Unlock()
	if wait {
		r.held = append(r.held, heldPost{o: o, due: time.Now().Add(g.cfg.PeerGrace)})
		return nil
	}
	return g.post(ctx, c, r, o)
}

func (g *Gateway) post(ctx context.Context, c *conn, r *room, o outbound) error {
	if o.posted.IsZero() {
		o.posted, o.after = time.Now(), r.lastStanza
	}
	if g.holdForTarget(r, o) {
		return nil
	}
	r.unacked = append(r.unacked, o)
	g.Stats.MeshToRoom.Add(1)
	m := outMessage{ID: o.id, To: r.cfg.JID.String(), Type: "groupchat", Body: o.body, OriginID: &originID{o.id}}
	if time.Since(o.heard) > 30*time.Second {
		// Late (the room or the link was away): say when it was heard.
		m.Delay = &delayElem{Stamp: o.heard.UTC().Format(time.RFC3339), From: g.cfg.JID.Bare().String()}
	}
	g.relateOut(r, o, &m)
	return c.send(ctx, m)
}

// dropArchived removes from the unacked list what the room's archive
// already has. ok is false when the archive cannot be read.
func (g *Gateway) dropArchived(ctx context.Context, c *conn, r *room) (ok bool) {
	after := r.unacked[0].after
	if after == roomStart {
		after = "" // the room's first messages: search by time instead
	}
	seen, ok := c.arch.seenSince(ctx, c.s, r, after, r.unacked[0].posted.Add(-time.Minute))
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
func (g *Gateway) flush(ctx context.Context, c *conn, r *room) error {
	if len(r.unacked) > 0 {
		ok := g.dropArchived(ctx, c, r)
		if ok && len(r.unacked) > 0 && g.cfg.ResendGrace > 0 {
			// The old connection's last stanzas may still be on their way
			// through the server (a link that froze rather than broke): give
			// them a moment to land in the archive before resending.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(g.cfg.ResendGrace):
			}
			ok = g.dropArchived(ctx, c, r)
		}
		if ok {
			g.log.Info("resending what the room did not get before the connection dropped", "room", r.cfg.JID.String(), "resend", len(r.unacked))
		} else {
			g.log.Warn("the room keeps no archive; resending unconfirmed messages, which may show twice", "room", r.cfg.JID.String(), "count", len(r.unacked))
		}
	}
	if err := g.catchUp(ctx, c, r); err != nil {
		return err
	}
	unacked, backlog := r.unacked, r.backlog
	r.unacked, r.backlog = nil, nil
	for i, o := range unacked {
		if err := g.post(ctx, c, r, o); err != nil {
			// o is in unacked (post puts it there first); what was not
			// posted yet waits for the next join, ahead of anything newer.
			r.backlog = append(append(slices.Clone(unacked[i+1:]), backlog...), r.backlog...)
			return err
		}
	}
	// What arrived while we were out: another bridge may have posted it.
	for i, o := range backlog {
		if err := g.postOrHold(ctx, c, r, o); err != nil {
			r.backlog = append(slices.Clone(backlog[i+1:]), r.backlog...)
			return err
		}
	}
	return nil
}

func randomID() string {
	return "sr-" + strconv.FormatUint(rand.Uint64(), 36)
}
