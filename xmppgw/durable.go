package xmppgw

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strconv"
	"time"

	"mellium.im/xmpp/jid"

	"github.com/jshiffer/lora-xmpp-bridge/internal/spool"
	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// Spool is the durable store the XMPP gateway keeps in what waits for a
// room, the rooms' last message ids and the room messages already sent on
// to the mesh, so that a restart (or a power cut) loses nothing and
// repeats nothing.
type Spool interface {
	Push(queue string, data []byte, dedupeKey string) (seq uint64, dup bool, err error)
	Peek(queue string, n int) ([]spool.Item, error)
	Ack(queue string, seqs ...uint64) error
	Seen(key string) (bool, error)
	Mark(key string) error
}

// spooled is an outbound mesh text as kept on disk.
type spooled struct {
	ID      string    `json:"id"`
	Body    string    `json:"body"`
	Heard   time.Time `json:"heard"`
	Channel string    `json:"channel"`
	Index   uint32    `json:"channel_index"`
	DM      bool      `json:"dm,omitempty"`
	HeardBy string    `json:"heard_by,omitempty"`
	// Rel: a tapback or reply, and the packet it refers to.
	Rel *spooledRel `json:"rel,omitempty"`
}

// meshOutQueue keeps the send requests made from room messages until the
// radio link reports on them. A room message counts as handed to the mesh
// (and the room's position moves past it) once its requests are here: the
// broker keeps nothing, and the radio link may die before it keeps them.
const meshOutQueue = "to-mesh"

func outQueue(room string) string  { return "to-room:" + room }
func markQueue(room string) string { return "room-mark:" + room }

// keep records an outbound text before it is queued; dup means it was
// accepted before (the radio replayed it, or a relay repeated it after a
// restart) and must not be posted again.
func (g *Gateway) keep(o *outbound) (dup bool) {
	if g.cfg.Spool == nil || o.dm {
		return false
	}
	b, _ := json.Marshal(spooled{ID: o.id, Body: o.body, Heard: o.heard, Channel: o.channel, Index: o.channelIdx, DM: o.dm, HeardBy: o.heardBy, Rel: o.rel.spooled()})
	seq, dup, err := g.cfg.Spool.Push(o.queue, b, o.id)
	if err != nil {
		// Not durable, but still delivered while the daemon runs.
		g.log.Error("spool: could not keep a mesh message on disk", "id", o.id, "err", err)
		return false
	}
	o.seq = seq
	return dup
}

// delivered removes a text the room confirmed (or refused for good).
func (g *Gateway) delivered(o outbound) {
	if g.cfg.Spool == nil || o.seq == 0 {
		return
	}
	if err := g.cfg.Spool.Ack(o.queue, o.seq); err != nil {
		g.log.Error("spool: could not mark a posted message done; it is checked again after a restart", "err", err)
	}
}

// restoreRoom returns what waited for a room when the daemon stopped. The
// room may or may not have got these, so they are checked against its
// archive before they are posted.
func (g *Gateway) restoreRoom(r *room) []outbound {
	if g.cfg.Spool == nil {
		return nil
	}
	items, err := g.cfg.Spool.Peek(outQueue(r.cfg.JID.String()), 0)
	if err != nil {
		g.log.Error("spool: could not read what waits for the room", "room", r.cfg.JID.String(), "err", err)
		return nil
	}
	var out []outbound
	for _, it := range items {
		var s spooled
		if json.Unmarshal(it.Data, &s) != nil {
			_ = g.cfg.Spool.Ack(outQueue(r.cfg.JID.String()), it.Seq)
			continue
		}
		out = append(out, outbound{id: s.ID, body: s.Body, heard: s.Heard, channel: s.Channel, channelIdx: s.Index, heardBy: s.HeardBy,
			queue: outQueue(r.cfg.JID.String()), seq: it.Seq, posted: it.At, rel: s.Rel.rel()})
	}
	if len(out) > 0 {
		g.log.Info("mesh messages from before the restart wait for the room", "room", r.cfg.JID.String(), "count", len(out))
	}
	return out
}

// lastSeen returns the room's id of the last message the bridge saw in it,
// as kept across restarts.
func (g *Gateway) lastSeen(r *room) string {
	if g.cfg.Spool == nil {
		return ""
	}
	items, err := g.cfg.Spool.Peek(markQueue(r.cfg.JID.String()), 0)
	if err != nil || len(items) == 0 {
		return ""
	}
	r.markSeq = items[len(items)-1].Seq
	r.lastSeenAt = items[len(items)-1].At
	return string(items[len(items)-1].Data)
}

// remember keeps the room's id of the last message seen, replacing the one before.
func (g *Gateway) remember(r *room, stanzaID string) {
	r.lastStanza, r.lastSeenAt = stanzaID, time.Now()
	if g.cfg.Spool == nil {
		return
	}
	q := markQueue(r.cfg.JID.String())
	seq, _, err := g.cfg.Spool.Push(q, []byte(stanzaID), "")
	if err != nil {
		g.log.Warn("spool: could not record the room's position", "err", err)
		return
	}
	if r.markSeq != 0 {
		_ = g.cfg.Spool.Ack(q, r.markSeq)
	}
	r.markSeq = seq
}

// firstTime reports whether a room message (by the room's id for it) is
// new: live delivery and the archive catch-up after a reconnect may both
// offer the same message. It records nothing: markSent does, once the
// message has been handed on, so that a crash in between makes the
// message new again rather than lost (its requests keep their ids, and
// the radio link drops a request it already has).
func (g *Gateway) firstTime(key string) bool {
	g.mu.Lock()
	seen := g.seenMsgs[key]
	g.mu.Unlock()
	if seen {
		return false
	}
	if g.cfg.Spool == nil {
		return true
	}
	s, err := g.cfg.Spool.Seen(key)
	return err != nil || !s
}

// markSent records that a room message has been handed on.
func (g *Gateway) markSent(key string) {
	g.mu.Lock()
	g.seenMsgs[key] = true
	if len(g.seenMsgs) > 10000 {
		g.seenMsgs = map[string]bool{key: true}
	}
	g.mu.Unlock()
	if g.cfg.Spool == nil {
		return
	}
	if err := g.cfg.Spool.Mark(key); err != nil {
		g.log.Warn("spool: could not record a room message", "err", err)
	}
}

// requestID derives a send request's id from the room message and chunk,
// so a message offered again (after a crash, by the archive) makes the same
// requests, which the radio link recognises and does not send twice.
func requestID(msgKey string, chunk int) uint32 {
	h := fnv.New32a()
	h.Write([]byte(msgKey + "#" + strconv.Itoa(chunk)))
	return h.Sum32() | 1
}

// pendingSend is one chunk of a message for the mesh, for one radio, as
// the mesh outbox keeps it until that radio reports on it.
type pendingSend struct {
	// Target is the gateway id of the radio that sends it; "" while no
	// radio is known, until the first comes online.
	Target string    `json:"target,omitempty"`
	Text   string    `json:"text"`
	Room   string    `json:"room"`
	Nick   string    `json:"nick"`
	Msg    string    `json:"msg"` // the message's key, shared by its chunks
	Words  string    `json:"words"`
	Part   int       `json:"part"` // 1-based
	Parts  int       `json:"parts"`
	Asked  time.Time `json:"asked"`
	// ReplyTo is the key of the message this one replies to, and ReplyID
	// its packet id on the target's mesh (the first part carries it);
	// Emoji makes the chunk a tapback on ReplyID.
	ReplyTo string `json:"reply_to,omitempty"`
	ReplyID uint32 `json:"reply_id,omitempty"`
	Emoji   bool   `json:"emoji,omitempty"`
}

// id is the request id of the chunk for its target: derived from the
// message, chunk and radio, so the same chunk offered again (after a
// crash, by the archive) is recognised by the radio side and sent once.
func (p pendingSend) id() uint32 { return requestID(p.Msg+"@"+p.Target, p.Part-1) }

func (p pendingSend) info(seq uint64) requestInfo {
	return requestInfo{room: jid.MustParse(p.Room), nick: p.Nick, msg: p.Msg, words: p.Words, part: p.Part, parts: p.Parts, target: p.Target, asked: p.Asked, seq: seq}
}

// keepSend records a chunk in the mesh outbox before it is published, and
// remembers it until its outcome arrives. A chunk offered again after a
// crash does not add a second copy.
func (g *Gateway) keepSend(p pendingSend) {
	var seq uint64
	if g.cfg.Spool != nil {
		b, _ := json.Marshal(p)
		key := fmt.Sprintf("to-mesh:%s#%d@%s", p.Msg, p.Part-1, p.Target)
		var err error
		if seq, _, err = g.cfg.Spool.Push(meshOutQueue, b, key); err != nil {
			// Not durable, but still sent while the daemon runs.
			g.log.Error("spool: could not keep a message for the mesh on disk", "err", err)
		}
	}
	g.noteSend(p)
	if p.Target == "" {
		return // no request yet: one is made per radio when radios are known
	}
	info := p.info(seq)
	g.mu.Lock()
	defer g.mu.Unlock()
	if old, ok := g.requests[p.id()]; ok && seq == 0 {
		info.seq = old.seq // kept before a restart, and still waiting
	}
	g.requests[p.id()] = info
}

// publishSend publishes a chunk to its radio.
func (g *Gateway) publishSend(rc Room, p pendingSend) error {
	req := topics.SendRequest{Origin: topics.OriginXMPP, ID: p.id(), To: mesh.Broadcast, Channel: rc.Channel, Data: p.data()}
	if rc.ByIndex {
		req.Channel, req.ChannelIndex = "", rc.Index
	}
	b, err := req.Marshal()
	if err != nil {
		return err
	}
	return g.bus.Publish(topics.MeshTXTo(p.Target), b, false)
}

// sent removes a request the radio side reported on from the outbox.
func (g *Gateway) sent(seq uint64) {
	if g.cfg.Spool == nil {
		return
	}
	if err := g.cfg.Spool.Ack(meshOutQueue, seq); err != nil {
		g.log.Error("spool: could not mark a message for the mesh done; it is offered again after a restart", "err", err)
	}
}

// restoreSends takes back what the outbox held when the daemon stopped, so
// that outcomes arriving later still reach their room.
func (g *Gateway) restoreSends() {
	kept := g.pendingSends()
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, k := range kept {
		if k.Target != "" {
			g.requests[k.id()] = k.info(k.seq)
		}
	}
}

// offerAgain publishes again to a radio side that has come online every
// chunk for it that it has not reported on (it recognises one it already
// has, and does not send it twice), and hands what waited for any radio
// to the radios now known.
func (g *Gateway) offerAgain(gateway string) {
	n := 0
	for _, k := range g.pendingSends() {
		if k.Target != gateway {
			continue
		}
		if err := g.publishSend(k.room, k.pendingSend); err != nil {
			g.log.Warn("could not offer a waiting message to the radio side again", "radio", gateway, "err", err)
			return
		}
		n++
	}
	if n > 0 {
		g.log.Info("offered a radio side what waited for it", "radio", gateway, "count", n)
	}
	g.assignWaiting()
}

// assignWaiting hands what was said while no radio was known to the
// radios known now, one per mesh. Two callers at once (a radio coming
// online as a message is kept) make the same requests, which are kept
// once and sent once.
func (g *Gateway) assignWaiting() {
	for _, k := range g.pendingSends() {
		if k.Target != "" {
			continue
		}
		g.mu.Lock()
		targets := g.radios.transmitters(k.Room, nil)
		g.mu.Unlock()
		if len(targets) == 0 {
			return
		}
		for _, t := range targets {
			p := k.pendingSend
			p.Target = t
			if p.ReplyTo != "" && p.Part == 1 {
				p.ReplyID = g.replyIDFor(p.ReplyTo, t)
			}
			g.keepSend(p)
			if err := g.publishSend(k.room, p); err != nil {
				g.log.Warn("could not offer a waiting message to the radio side", "radio", t, "err", err)
				return
			}
		}
		g.sent(k.seq)
	}
}

type keptSend struct {
	pendingSend
	room Room // the room's configuration
	seq  uint64
}

// pendingSends reads the outbox; what is unreadable, or for a room no
// longer configured, is dropped.
func (g *Gateway) pendingSends() []keptSend {
	if g.cfg.Spool == nil {
		return nil
	}
	items, err := g.cfg.Spool.Peek(meshOutQueue, 0)
	if err != nil {
		g.log.Error("spool: could not read the messages waiting for the mesh", "err", err)
		return nil
	}
	out := make([]keptSend, 0, len(items))
	for _, it := range items {
		var p pendingSend
		err := json.Unmarshal(it.Data, &p)
		if err == nil {
			_, err = jid.Parse(p.Room)
		}
		if err != nil {
			g.log.Error("spool: dropping an unreadable message for the mesh", "seq", it.Seq)
			_ = g.cfg.Spool.Ack(meshOutQueue, it.Seq)
			continue
		}
		rc, ok := g.roomConfig(p.Room)
		if !ok {
			g.log.Warn("dropping a message for the mesh from a room no longer bridged", "room", p.Room)
			_ = g.cfg.Spool.Ack(meshOutQueue, it.Seq)
			continue
		}
		out = append(out, keptSend{p, rc, it.Seq})
	}
	return out
}

func (g *Gateway) roomConfig(room string) (Room, bool) {
	for _, r := range g.cfg.Rooms {
		if r.JID.String() == room {
			return r, true
		}
	}
	return Room{}, false
}
