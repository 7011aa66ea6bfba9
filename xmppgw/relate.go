package xmppgw

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"mellium.im/xmpp/jid"

	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// How messages that refer to others cross: tapbacks and XEP-0444
// reactions, mesh replies and XEP-0461 replies, both ways; XEP-0308
// corrections and XEP-0424 retractions of room messages. The relations
// store (relations.go) finds the message referred to on the other side.

// meshRel is what a mesh text refers to: a tapback (Data.emoji set) or a
// reply (Data.reply_id alone) names a packet.
type meshRel struct {
	replyID uint32 // Data.reply_id
	emoji   bool
	from    string // the sender's node id
	text    string // the payload: a tapback's emoji
}

func (m meshRel) tapback() bool { return m.emoji && m.replyID != 0 }

// spooledRel is meshRel as the spool keeps it with its text.
type spooledRel struct {
	ReplyID uint32 `json:"reply_id"`
	Emoji   bool   `json:"emoji,omitempty"`
	From    string `json:"from"`
	Text    string `json:"text"`
}

func (m meshRel) spooled() *spooledRel {
	if m.replyID == 0 {
		return nil
	}
	return &spooledRel{ReplyID: m.replyID, Emoji: m.emoji, From: m.from, Text: m.text}
}

func (s *spooledRel) rel() meshRel {
	if s == nil {
		return meshRel{}
	}
	return meshRel{replyID: s.ReplyID, emoji: s.Emoji, from: s.From, text: s.Text}
}

// meshIDs reads the sender and packet id out of a mesh text's id.
func meshIDs(id string) (from, packet uint32, ok bool) {
	_, err := fmt.Sscanf(id, "mesh-%08x-%08x", &from, &packet)
	return from, packet, err == nil
}

// targetWait is how long a tapback or reply waits for the room to confirm
// the message it refers to (and give its id) before it is posted as text.
const targetWait = 10 * time.Second

// holdForTarget keeps back a tapback or reply whose target the room has
// not confirmed yet (posted just before it): the room's id for the target
// is what the reaction or reply names. It reports whether o waits.
func (g *Gateway) holdForTarget(r *room, o outbound) bool {
	if o.rel.replyID == 0 || time.Since(o.posted) > targetWait {
		return false
	}
	if t, ok := g.rel.byPacket(o.rel.replyID); ok && (t.StanzaID != "" || t.Room != r.cfg.JID.String()) {
		return false
	}
	for _, u := range r.unacked {
		if _, pid, ok := meshIDs(u.id); ok && pid == o.rel.replyID {
			r.awaiting = append(r.awaiting, o)
			return true
		}
	}
	return false
}

// releaseWaiting posts what waited for its target, now that the room
// may have confirmed it.
func (g *Gateway) releaseWaiting(ctx context.Context, c *conn, r *room) error {
	w := r.awaiting
	r.awaiting = nil
	for i, o := range w {
		if err := g.post(ctx, c, r, o); err != nil {
			r.awaiting = append(r.awaiting, w[i+1:]...)
			return err
		}
	}
	return nil
}

// relateOut turns the room message for a mesh tapback into a XEP-0444
// reaction on the message it reacts to, and that for a mesh reply into a
// XEP-0461 reply with a XEP-0428 fallback quote. When the target is not
// known (too old, never bridged) a tapback is said in words, and a reply
// is posted as it is.
func (g *Gateway) relateOut(r *room, o outbound, m *outMessage) {
	if o.rel.replyID == 0 {
		return
	}
	t, ok := g.rel.byPacket(o.rel.replyID)
	if ok && t.Room != r.cfg.JID.String() {
		ok = false
	}
	if o.rel.emoji {
		if ok && t.StanzaID != "" {
			// One reaction set from the bridge for every mesh user: a new
			// set replaces the old.
			var set []string
			g.rel.update(t.Key, func(rel *relation) bool {
				changed := !slices.Contains(rel.Reactions, o.rel.text) && len(rel.Reactions) < maxReactions
				if changed {
					rel.Reactions = append(rel.Reactions, o.rel.text)
				}
				set = rel.Reactions
				return changed
			})
			if slices.Contains(set, o.rel.text) {
				m.Body, m.Reactions, m.Store = "", &reactionsElem{ID: t.StanzaID, Reactions: set}, &storeHint{}
				return
			}
		}
		what := "an earlier message"
		if ok {
			what = "“" + firstWords(t.Quote) + "”"
		}
		m.Body = g.format(o.rel.from, o.channel, fmt.Sprintf("reacted %s to %s", o.rel.text, what))
		return
	}
	if !ok {
		return
	}
	quote, n := quoteFallback(t.Quote)
	m.Body = quote + m.Body
	m.Fallback = &fallbackElem{For: nsReply, Bodies: []fallbackRange{{Start: "0", End: strconv.Itoa(n)}}}
	if t.StanzaID != "" {
		m.Reply = &replyElem{To: t.Author, ID: t.StanzaID}
	}
}

// reflected records a mesh text the room confirmed, with the room's id
// for it: a reaction or reply from the room names that id, one from the
// mesh its packet id.
func (g *Gateway) reflected(r *room, o outbound, stanzaID string) {
	_, pid, ok := meshIDs(o.id)
	if !ok || o.rel.tapback() {
		return
	}
	rel := relation{Key: o.id, Room: r.cfg.JID.String(), StanzaID: stanzaID, OriginID: o.id, MsgID: o.id,
		Author: r.occupant.String(), Quote: cut(o.body, quoteBytes), Packet: pid, HeardBy: o.heardBy, At: o.heard}
	if t, ok := g.rel.byPacket(o.rel.replyID); ok {
		rel.ReplyTo = t.Key
	}
	if _, known := g.rel.get(o.id); known {
		g.rel.update(o.id, func(k *relation) bool {
			if k.StanzaID != "" || stanzaID == "" {
				return false
			}
			*k = rel
			return true
		})
		return
	}
	g.rel.add(rel)
}

// roomMsg is a person's room message, live or from the archive.
type roomMsg struct {
	from                  jid.JID
	body, key             string
	sid, oid, id, occupID string
	ext                   msgExt
}

// fromRoomMsg sends a person's room message on: a reaction, correction or
// retraction acts on the message it names; anything else goes to the mesh
// (a reply naming the mesh packet it replies to), and is remembered so
// that the mesh's tapbacks and replies, and the room's corrections, find
// it.
func (g *Gateway) fromRoomMsg(ctx context.Context, c *conn, r *room, m roomMsg) error {
	switch {
	case m.ext.Reactions != nil:
		g.roomReaction(r, m)
		return nil
	case m.ext.Retract != nil:
		g.roomAmend(r, m, m.ext.Retract.ID, true)
		return nil
	case m.ext.Replace != nil:
		g.roomAmend(r, m, m.ext.Replace.ID, false)
		return nil
	}
	body := m.body
	var target relation
	replying := false
	if m.ext.Reply != nil {
		body = stripFallback(body, m.ext.Fallbacks, nsReply)
		target, replying = g.rel.byID(r.cfg.JID.String(), m.ext.Reply.ID)
	}
	body = strings.TrimSpace(body)
	if cmd, isCmd := strings.CutPrefix(body, "!"); body != "" && !(isCmd && isCommand(cmd)) && g.firstTime(m.key) {
		nick := m.from.Resourcepart()
		rel := relation{Key: m.key, Room: r.cfg.JID.String(), StanzaID: m.sid, OriginID: m.oid, MsgID: m.id,
			Author: m.from.String(), OccupantID: m.occupID, Nick: nick, Quote: cut(nick+": "+body, quoteBytes), At: time.Now()}
		if replying {
			rel.ReplyTo = target.Key
		}
		g.rel.add(rel)
	}
	return g.fromRoom(ctx, c, r, m.from, body, m.key)
}

// replyOf is what the first part of a room message sent to radio says it
// replies to: the relation's key, and the packet id on that radio's mesh
// (0 when it has none there, or no radio is known yet).
func (g *Gateway) replyOf(msgKey, radio string) (string, uint32) {
	rel, ok := g.rel.get(msgKey)
	if !ok || rel.ReplyTo == "" {
		return "", 0
	}
	return rel.ReplyTo, g.replyIDFor(rel.ReplyTo, radio)
}

// replyIDFor is the packet id the message with key has on the mesh of
// radio, 0 when it has none there.
func (g *Gateway) replyIDFor(key, radio string) uint32 {
	t, ok := g.rel.get(key)
	if !ok || radio == "" {
		return 0
	}
	if t.Packet != 0 {
		if t.HeardBy == "" || t.HeardBy == radio || g.sameMesh(radio, t.HeardBy) {
			return t.Packet
		}
		return 0
	}
	if ids := t.Wire[radio]; len(ids) > 0 && ids[0] != 0 {
		return ids[0]
	}
	// Sent by another radio on the same mesh: the packet id is the mesh's.
	for _, other := range slices.Sorted(maps.Keys(t.Wire)) {
		if ids := t.Wire[other]; other != "" && len(ids) > 0 && ids[0] != 0 && g.sameMesh(radio, other) {
			return ids[0]
		}
	}
	return 0
}

// sameMesh reports whether two radios of the bridge are known to be on one
// mesh.
func (g *Gateway) sameMesh(a, b string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, m := range g.radios.meshes() {
		if has(m, a) {
			return has(m, b)
		}
	}
	return false
}

// learnWire records the packet id a part of a room message went on the
// mesh with, as the radio side reports it.
func (g *Gateway) learnWire(info requestInfo, packetID uint32) {
	if info.part < 1 || info.part > 64 {
		return
	}
	g.rel.update(info.msg, func(r *relation) bool {
		ids := r.Wire[info.target]
		if len(ids) < info.part {
			ids = append(ids, make([]uint32, info.part-len(ids))...)
		}
		if ids[info.part-1] == packetID {
			return false
		}
		ids[info.part-1] = packetID
		if r.Wire == nil {
			r.Wire = map[string][]uint32{}
		}
		r.Wire[info.target] = ids
		return true
	})
}

// noteSend records that a room message goes to a radio in parts.
func (g *Gateway) noteSend(p pendingSend) {
	g.rel.update(p.Msg, func(r *relation) bool {
		if ids, ok := r.Wire[p.Target]; ok && len(ids) == p.Parts {
			return false
		}
		if r.Wire == nil {
			r.Wire = map[string][]uint32{}
		}
		ids := make([]uint32, p.Parts)
		copy(ids, r.Wire[p.Target])
		r.Wire[p.Target] = ids
		return true
	})
}

// maxTapbacks bounds the tapbacks one reaction stanza makes: a person
// adding a dozen emoji at once must not fill the mesh's airtime.
const maxTapbacks = 3

// roomReaction sends the reactions a person added to a message that came
// from the mesh, or went to it, to the mesh as tapbacks on its packet (the
// first part's, for a message in parts). A mesh tapback cannot be taken
// back: removed reactions are not sent; an emoji already sent for the
// message (by anyone) is not sent again.
func (g *Gateway) roomReaction(r *room, m roomMsg) {
	if !g.firstTime(m.key) {
		return
	}
	defer g.markSent(m.key)
	room := r.cfg.JID.String()
	who := cmp.Or(m.occupID, m.from.String())
	added := g.edits.reactionsAdded(room+"\x00"+who+"\x00"+m.ext.Reactions.ID, m.ext.Reactions.Reactions)
	if len(added) == 0 {
		return
	}
	t, ok := g.rel.byID(room, m.ext.Reactions.ID)
	if !ok || t.Retracted {
		g.log.Debug("reaction to a message the mesh never had; not sent", "room", room, "id", m.ext.Reactions.ID)
		return
	}
	targets := g.packetTargets(r.cfg, t)
	if len(targets) == 0 {
		g.log.Debug("reaction to a message that has no packet on a mesh; not sent", "room", room, "id", m.ext.Reactions.ID)
		return
	}
	nick := m.from.Resourcepart()
	for _, emoji := range added[:min(len(added), maxTapbacks)] {
		key := "react:" + t.Key + ":" + emoji
		if !g.firstTime(key) {
			continue
		}
		for _, tp := range targets {
			p := pendingSend{Target: tp.radio, Text: emoji, Room: room, Nick: nick, Msg: key, Words: emoji, Part: 1, Parts: 1,
				Asked: time.Now(), ReplyID: tp.packet, Emoji: true}
			g.keepSend(p)
			if err := g.publishSend(r.cfg, p); err != nil {
				g.log.Warn("could not send a reaction to the mesh", "radio", tp.radio, "err", err)
				continue
			}
			g.Stats.ChunksToMesh.Add(1)
		}
		g.markSent(key)
		g.log.Debug("reaction sent to the mesh as a tapback", "room", room, "emoji", emoji, "radios", len(targets))
	}
}

// radioPacket is a radio and the packet id a message has on its mesh.
type radioPacket struct {
	radio  string
	packet uint32
}

// packetTargets are the radios a tapback on message t goes to, each with
// the packet id t has on its mesh: a mesh text's own mesh, or the radios
// a room message's first part went out on.
func (g *Gateway) packetTargets(rc Room, t relation) []radioPacket {
	var out []radioPacket
	if t.Packet != 0 {
		g.mu.Lock()
		radios := g.radios.transmitters(rc.JID.String(), func(m []*radioSide) bool { return t.HeardBy != "" && !has(m, t.HeardBy) })
		g.mu.Unlock()
		for _, radio := range radios {
			out = append(out, radioPacket{radio, t.Packet})
		}
		return out
	}
	for _, radio := range slices.Sorted(maps.Keys(t.Wire)) {
		if ids := t.Wire[radio]; radio != "" && len(ids) > 0 && ids[0] != 0 {
			out = append(out, radioPacket{radio, ids[0]})
		}
	}
	return out
}

// The default window in which a correction of a message that already went
// out over radio is still sent, as "nick (edit): ...".
const DefaultEditWindow = 10 * time.Minute

// amendTimeout is how long an amend waits for the radio side's answer.
const amendTimeout = 30 * time.Second

// edits is what the room's reactions, corrections and retractions have
// under way.
type edits struct {
	mu    sync.Mutex
	parts map[uint32]*amendPart // amends asked of radio sides, by amend id
	prev  map[string][]string   // each person's reactions on a message, as last said
}

func newEdits() *edits {
	return &edits{parts: map[uint32]*amendPart{}, prev: map[string][]string{}}
}

// reactionsAdded records a person's reactions on a message and returns
// those that are new since they last said.
func (e *edits) reactionsAdded(key string, now []string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var added []string
	for _, s := range now {
		if s = strings.TrimSpace(s); s != "" && len(s) <= 32 && !slices.Contains(e.prev[key], s) && !slices.Contains(added, s) {
			added = append(added, s)
		}
	}
	if len(e.prev) >= 4096 {
		clear(e.prev)
	}
	e.prev[key] = slices.Clone(now)
	return added
}

// amendOp is one correction or retraction of a room message, across the
// radios it went to.
type amendOp struct {
	retract  bool
	key      string // the correction's or retraction's own message key
	rc       Room
	rel      relation
	nick     string
	body     string   // the corrected text
	chunks   []string // ... in mesh parts
	waiting  int
	applied  map[string]bool // radios whose queue took every change
	late     map[string]bool // radios that had (part of) the message already
	silent   bool            // a radio side did not answer
	deadline time.Time
	done     bool
}

// amendPart is one amend asked of a radio side.
type amendPart struct {
	id    uint32
	op    *amendOp
	radio string
	req   uint32       // the request amended
	repl  *pendingSend // the replacement; nil cancels
}

// roomAmend corrects (XEP-0308) or retracts (XEP-0424) a room message the
// bridge sent to the mesh. What still waits in a radio side's queue is
// replaced or removed there; what the radio has sent cannot be: a
// correction of it within Config.EditWindow goes out once as
// "nick (edit): ...", and of a retraction the room is told.
func (g *Gateway) roomAmend(r *room, m roomMsg, id string, retract bool) {
	if !g.firstTime(m.key) {
		return
	}
	defer g.markSent(m.key)
	room := r.cfg.JID.String()
	t, ok := g.rel.byID(room, id)
	if !ok || t.Packet != 0 || len(t.Wire) == 0 {
		g.log.Debug("correction or retraction of a message the mesh never had; ignored", "room", room, "id", id)
		return
	}
	if !authored(t, m) {
		g.log.Warn("correction or retraction of another person's message ignored", "room", room, "from", m.from.String(), "id", id)
		return
	}
	if t.Retracted {
		return
	}
	op := &amendOp{retract: retract, key: m.key, rc: r.cfg, rel: t, nick: t.Nick, applied: map[string]bool{}, late: map[string]bool{},
		deadline: time.Now().Add(amendTimeout)}
	if !retract {
		op.body = strings.TrimSpace(stripFallback(m.body, m.ext.Fallbacks, nsReply))
		chunks, err := mesh.Chunks(op.nick, op.body, topics.MaxTextBytes)
		switch {
		case op.body == "" || len(chunks) == 0:
			return
		case err != nil:
			g.say(r.cfg.JID, fmt.Sprintf("⚠ %s: your correction was not sent to the mesh: %v", op.nick, err))
			return
		case len(chunks) > g.cfg.MaxChunks:
			g.say(r.cfg.JID, fmt.Sprintf("⚠ %s: your correction would take %d mesh packets; at most %d are sent per message, so it was not sent.",
				op.nick, len(chunks), g.cfg.MaxChunks))
			return
		}
		op.chunks = chunks
	}
	var asks []*amendPart
	for _, radio := range slices.Sorted(maps.Keys(t.Wire)) {
		ids := t.Wire[radio]
		if radio == "" {
			g.amendUnassigned(op)
			continue
		}
		sent := t.sentOn(radio)
		if sent {
			op.late[radio] = true
			if !retract {
				continue // correct one part and not another: the (edit) says it all
			}
		}
		for i, pid := range ids {
			if pid != 0 {
				continue
			}
			part := &amendPart{op: op, radio: radio, req: requestID(t.Key+"@"+radio, i)}
			part.id = requestID("amend:"+m.key+"@"+radio, i)
			if !retract && i < len(op.chunks) {
				p := pendingSend{Target: radio, Text: op.chunks[i], Room: room, Nick: op.nick, Msg: t.Key, Words: firstWords(op.body),
					Part: i + 1, Parts: len(op.chunks), Asked: time.Now()}
				if i == 0 && t.ReplyTo != "" {
					p.ReplyTo, p.ReplyID = t.ReplyTo, g.replyIDFor(t.ReplyTo, radio)
				}
				part.repl = &p
			}
			asks = append(asks, part)
		}
	}
	g.edits.mu.Lock()
	op.waiting = len(asks)
	for _, p := range asks {
		g.edits.parts[p.id] = p
	}
	g.edits.mu.Unlock()
	for _, p := range asks {
		a := topics.Amend{Origin: topics.OriginXMPP, ID: p.id, Target: p.req, Action: topics.AmendCancel}
		if p.repl != nil {
			a.Action, a.Data = topics.AmendReplace, p.repl.data()
		}
		b, err := a.Marshal()
		if err == nil {
			err = g.bus.Publish(topics.MeshAmendTo(p.radio), b, false)
		}
		if err != nil {
			g.log.Warn("could not ask the radio side to change a queued message", "radio", p.radio, "err", err)
			g.amendAnswered(p, false, false)
		}
	}
	g.log.Info("asked the radio sides to change a message still queued", "room", room, "retract", retract, "packets", len(asks))
	g.edits.mu.Lock()
	finish := op.waiting == 0 && !op.done
	op.done = op.done || finish
	g.edits.mu.Unlock()
	if finish {
		g.finishAmend(op)
	}
}

// authored reports whether m comes from the author of t: by occupant id
// where the room gives one, else by occupant JID.
func authored(t relation, m roomMsg) bool {
	if t.OccupantID != "" {
		return m.occupID == t.OccupantID
	}
	return m.from.String() == t.Author
}

// amendUnassigned changes what waits for the first radio to be known:
// it is only in the outbox. What was handed to radios since is theirs.
func (g *Gateway) amendUnassigned(op *amendOp) {
	found := false
	for _, k := range g.pendingSends() {
		if k.Msg != op.rel.Key || k.Target != "" {
			continue
		}
		g.sent(k.seq)
		found = true
	}
	if !found {
		return
	}
	op.applied[""] = true
	if op.retract {
		return
	}
	for i, c := range op.chunks {
		p := pendingSend{Text: c, Room: op.rc.JID.String(), Nick: op.nick, Msg: op.rel.Key, Words: firstWords(op.body),
			Part: i + 1, Parts: len(op.chunks), Asked: time.Now(), ReplyTo: op.rel.ReplyTo}
		g.keepAs(p, ":"+op.key)
	}
}

// data is the packet content of a chunk.
func (p pendingSend) data() *meshpb.Data {
	d := &meshpb.Data{Portnum: meshpb.PortNum_TEXT_MESSAGE_APP, Payload: []byte(p.Text), ReplyId: p.ReplyID}
	if p.Emoji {
		d.Emoji = 1
	}
	return d
}

// keepAs is keepSend for a chunk that replaces one kept before under the
// same message, part and radio: suffix keeps its spool entry apart.
func (g *Gateway) keepAs(p pendingSend, suffix string) uint64 {
	var seq uint64
	if g.cfg.Spool != nil {
		b, _ := json.Marshal(p)
		var err error
		if seq, _, err = g.cfg.Spool.Push(meshOutQueue, b, fmt.Sprintf("to-mesh:%s#%d@%s%s", p.Msg, p.Part-1, p.Target, suffix)); err != nil {
			g.log.Error("spool: could not keep a message for the mesh on disk", "err", err)
		}
	}
	if p.Target != "" {
		g.mu.Lock()
		g.requests[p.id()] = p.info(seq)
		g.mu.Unlock()
	}
	g.noteSend(p)
	return seq
}

// onAmendResult takes a radio side's answer to an amend.
func (g *Gateway) onAmendResult(_ string, payload []byte) {
	res, err := topics.ParseAmendResult(payload)
	if err != nil || res.Origin != topics.OriginXMPP {
		return
	}
	g.edits.mu.Lock()
	p := g.edits.parts[res.ID]
	delete(g.edits.parts, res.ID)
	g.edits.mu.Unlock()
	if p == nil {
		return
	}
	g.amendAnswered(p, res.Outcome == topics.AmendApplied, true)
}

// amendAnswered records a radio side's answer (answered false: none came
// in time) and finishes the operation once every part is answered.
func (g *Gateway) amendAnswered(p *amendPart, applied, answered bool) {
	if applied {
		g.mu.Lock()
		old := g.requests[p.req]
		delete(g.requests, p.req)
		g.mu.Unlock()
		if old.seq != 0 {
			g.sent(old.seq) // the old content leaves the outbox
		}
		if p.repl != nil {
			g.keepAs(*p.repl, fmt.Sprintf(":amend:%d", p.id))
		}
	}
	g.edits.mu.Lock()
	op := p.op
	if applied {
		if !op.late[p.radio] {
			op.applied[p.radio] = true
		}
	} else {
		op.late[p.radio] = true
		delete(op.applied, p.radio)
		op.silent = op.silent || !answered
	}
	op.waiting--
	finish := op.waiting <= 0 && !op.done
	op.done = op.done || finish
	g.edits.mu.Unlock()
	if finish {
		g.finishAmend(op)
	}
}

// expireAmends gives up on answers that did not come in time.
func (g *Gateway) expireAmends(now time.Time) {
	g.edits.mu.Lock()
	var late []*amendPart
	for id, p := range g.edits.parts {
		if now.After(p.op.deadline) {
			late = append(late, p)
			delete(g.edits.parts, id)
		}
	}
	g.edits.mu.Unlock()
	for _, p := range late {
		g.log.Warn("the radio side did not answer a change to a queued message", "radio", p.radio)
		g.amendAnswered(p, false, false)
	}
}

// finishAmend does what is left once every radio side answered: the parts
// a longer correction adds, an "(edit)" for the meshes that had the
// original already, a word to the room.
func (g *Gateway) finishAmend(op *amendOp) {
	t := op.rel
	room := op.rc.JID.String()
	late := slices.Sorted(maps.Keys(op.late))
	words := firstWords(strings.TrimPrefix(t.Quote, t.Nick+": "))
	if op.retract {
		g.rel.update(t.Key, func(r *relation) bool { r.Retracted = true; return true })
		switch {
		case len(late) == 0:
			g.say(op.rc.JID, fmt.Sprintf("🗑 %s: your message “%s” was taken back before it went out over radio.", op.nick, words))
		case op.silent:
			g.say(op.rc.JID, fmt.Sprintf("⚠ %s: the radio side did not answer; your message “%s” may still go out over radio.", op.nick, words))
		default:
			g.say(op.rc.JID, fmt.Sprintf("⚠ %s: your message “%s” already went out over radio; it cannot be unsent.", op.nick, words))
		}
		return
	}
	for _, radio := range slices.Sorted(maps.Keys(op.applied)) {
		if radio == "" {
			continue
		}
		// Parts beyond the original's number go after it in the queue.
		for i := len(t.Wire[radio]); i < len(op.chunks); i++ {
			p := pendingSend{Target: radio, Text: op.chunks[i], Room: room, Nick: op.nick, Msg: t.Key, Words: firstWords(op.body),
				Part: i + 1, Parts: len(op.chunks), Asked: time.Now()}
			g.keepAs(p, ":"+op.key)
			if err := g.publishSend(op.rc, p); err != nil {
				g.log.Warn("could not send a corrected message's part to the mesh", "radio", radio, "err", err)
			}
		}
	}
	edited := false
	if len(late) > 0 {
		switch {
		case t.Edited:
			g.say(op.rc.JID, fmt.Sprintf("✎ %s: your correction was not sent over radio: the message went out already, and only its first correction is sent.", op.nick))
		case time.Since(t.At) > g.cfg.EditWindow:
			g.say(op.rc.JID, fmt.Sprintf("✎ %s: your correction was not sent over radio: the message went out more than %v ago.", op.nick, g.cfg.EditWindow))
		default:
			author := op.nick + " (edit)"
			chunks, err := mesh.Chunks(author, op.body, topics.MaxTextBytes)
			if err != nil || len(chunks) == 0 || len(chunks) > g.cfg.MaxChunks {
				g.say(op.rc.JID, fmt.Sprintf("✎ %s: your correction is too long to send over radio.", op.nick))
				break
			}
			if err := g.sendChunks(op.rc, author, op.body, t.Key+"#edit", chunks, late); err != nil {
				g.log.Warn("could not send a correction to the mesh", "err", err)
				break
			}
			edited = true
		}
	}
	g.rel.update(t.Key, func(r *relation) bool {
		r.Quote = cut(op.nick+": "+op.body, quoteBytes)
		r.Edited = r.Edited || edited
		for radio := range op.applied {
			if ids := r.Wire[radio]; len(ids) != len(op.chunks) {
				w := make([]uint32, len(op.chunks))
				copy(w, ids)
				r.Wire[radio] = w
			}
		}
		return true
	})
	g.log.Info("room message corrected", "room", room, "in_queue", len(op.applied), "already_sent", len(late), "edit_sent", edited)
}
