package xmppgw

import (
	"encoding/json"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Namespaces of the message relations the bridge carries.
const (
	nsReactions = "urn:xmpp:reactions:0"
	nsReply     = "urn:xmpp:reply:0"
	nsFallback  = "urn:xmpp:fallback:0"
	nsCorrect   = "urn:xmpp:message-correct:0"
	nsRetract   = "urn:xmpp:message-retract:1"
)

// msgExt is what a message says about another: a reaction (XEP-0444), a
// reply (XEP-0461) with its fallback (XEP-0428), a correction (XEP-0308),
// a retraction (XEP-0424). Embedded in the messages as received, live and
// from the archive.
type msgExt struct {
	Reactions *reactionsElem `xml:"urn:xmpp:reactions:0 reactions"`
	Reply     *replyElem     `xml:"urn:xmpp:reply:0 reply"`
	Fallbacks []fallbackElem `xml:"urn:xmpp:fallback:0 fallback"`
	Replace   *idOnly        `xml:"urn:xmpp:message-correct:0 replace"`
	Retract   *idOnly        `xml:"urn:xmpp:message-retract:1 retract"`
}

type reactionsElem struct {
	ID        string   `xml:"id,attr"`
	Reactions []string `xml:"reaction"`
}

type replyElem struct {
	To string `xml:"to,attr,omitempty"`
	ID string `xml:"id,attr"`
}

type fallbackElem struct {
	For    string          `xml:"for,attr"`
	Bodies []fallbackRange `xml:"body"`
}

// fallbackRange is a range of the body in code points; without start and
// end, the whole body.
type fallbackRange struct {
	Start string `xml:"start,attr,omitempty"`
	End   string `xml:"end,attr,omitempty"`
}

type idOnly struct {
	ID string `xml:"id,attr"`
}

// storeHint asks the room's archive to keep a message without a body
// (XEP-0334), as a reaction is.
type storeHint struct{}

// stripFallback removes from body the ranges the sender marked as a
// fallback for the namespace ns (the quote a client puts before a reply),
// which the mesh, getting the reply itself, does not need. Ranges are in
// code points; ranges that make no sense are ignored.
func stripFallback(body string, fbs []fallbackElem, ns string) string {
	runes := []rune(body)
	drop := make([]bool, len(runes))
	for _, fb := range fbs {
		if fb.For != ns {
			continue
		}
		for _, b := range fb.Bodies {
			if b.Start == "" && b.End == "" {
				return "" // the whole body is the fallback
			}
			start, err1 := strconv.Atoi(b.Start)
			end, err2 := strconv.Atoi(b.End)
			if err1 != nil || err2 != nil || start < 0 || end < start {
				continue
			}
			for i := start; i < min(end, len(runes)); i++ {
				drop[i] = true
			}
		}
	}
	var sb strings.Builder
	for i, r := range runes {
		if !drop[i] {
			sb.WriteRune(r)
		}
	}
	return sb.String()
}

// quoteFallback is the quote that goes before a reply for clients without
// XEP-0461, and its length in code points.
func quoteFallback(quoted string) (string, int) {
	var sb strings.Builder
	for line := range strings.Lines(quoted) {
		sb.WriteString("> ")
		sb.WriteString(strings.TrimRight(line, "\n"))
		sb.WriteByte('\n')
	}
	return sb.String(), utf8.RuneCountInString(sb.String())
}

// relation is what the bridge knows of one message it carried, to find it
// again from either side: the room's ids for it, and the mesh packet ids
// it is. A mesh text posted to a room has its packet id; a room message
// sent to the mesh has the packet ids of its parts, per radio, once the
// radio side reports them.
type relation struct {
	Key  string `json:"key"` // a room message's key, or a mesh text's id (mesh-<from>-<packet id>)
	Room string `json:"room"`
	// The room's id for the message (reactions, replies and groupchat
	// retractions name it), the sender's origin-id and id (corrections
	// name one of those).
	StanzaID string `json:"stanza_id,omitempty"`
	OriginID string `json:"origin_id,omitempty"`
	MsgID    string `json:"msg_id,omitempty"`
	// Author is the occupant JID that said it, OccupantID its XEP-0421 id
	// where the room gives one: only the author may correct or retract.
	Author     string `json:"author,omitempty"`
	OccupantID string `json:"occupant_id,omitempty"`
	Nick       string `json:"nick,omitempty"`
	// Quote is the message as the room shows it ("name: text"), cut to
	// quoteBytes, for the fallback quote of a reply and for notices.
	Quote string `json:"quote,omitempty"`
	// Packet and HeardBy: a mesh text's packet id, and the radio that
	// heard it.
	Packet  uint32 `json:"packet,omitempty"`
	HeardBy string `json:"heard_by,omitempty"`
	// Wire: a room message's parts' packet ids (0 until known) by the
	// radio that sends them ("" before a radio was known).
	Wire map[string][]uint32 `json:"wire,omitempty"`
	// ReplyTo is the key of the message this one replies to.
	ReplyTo string    `json:"reply_to,omitempty"`
	At      time.Time `json:"at"`
	// Edited: an "(edit)" of it went to the mesh; Retracted: its author
	// took it back.
	Edited    bool `json:"edited,omitempty"`
	Retracted bool `json:"retracted,omitempty"`
	// Reactions are the bridge's own on it in the room: those of the mesh
	// users, as one set (a reaction message replaces the sender's set).
	Reactions []string `json:"reactions,omitempty"`
}

// sentOn reports whether any part of the message went out on radio.
func (r *relation) sentOn(radio string) bool {
	return slices.ContainsFunc(r.Wire[radio], func(id uint32) bool { return id != 0 })
}

// Bounds on what is remembered: a reaction or a reply to a message older
// than this, or beyond this many messages ago, finds nothing, and the
// fallback is used.
const (
	relationsKept   = 4096
	relationsMaxAge = 72 * time.Hour
	quoteBytes      = 200
	relationsQueue  = "relations"
	maxReactions    = 16 // distinct reactions the bridge shows on one message
)

// relations remembers the relations of the messages the bridge carried,
// in memory and in the spool (queue "relations", one item per message,
// replaced on each change), so they survive restarts.
type relations struct {
	mu     sync.Mutex
	spool  Spool
	log    *slog.Logger
	byKey  map[string]*keptRelation
	refs   map[string]string // room + "\x00" + an id the room or sender gave it -> key
	packet map[uint32]string // mesh packet id -> key
	order  []string          // keys, oldest first
}

type keptRelation struct {
	relation
	seq uint64
}

func newRelations(s Spool, log *slog.Logger) *relations {
	return &relations{spool: s, log: log, byKey: map[string]*keptRelation{}, refs: map[string]string{}, packet: map[uint32]string{}}
}

// load takes back what the spool holds; what is too old, unreadable or
// replaced by a later item is dropped from it.
func (rs *relations) load(now time.Time) {
	if rs.spool == nil {
		return
	}
	items, err := rs.spool.Peek(relationsQueue, 0)
	if err != nil {
		rs.log.Error("spool: could not read the message relations; reactions and replies to older messages fall back to text", "err", err)
		return
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var stale []uint64
	for _, it := range items {
		var r relation
		if json.Unmarshal(it.Data, &r) != nil || r.Key == "" || now.Sub(r.At) > relationsMaxAge {
			stale = append(stale, it.Seq)
			continue
		}
		if old, ok := rs.byKey[r.Key]; ok {
			stale = append(stale, old.seq)
		}
		rs.index(&keptRelation{r, it.Seq})
	}
	stale = append(stale, rs.trim(now)...)
	if len(stale) > 0 {
		_ = rs.spool.Ack(relationsQueue, stale...)
	}
}

// index adds k to the maps; rs.mu is held.
func (rs *relations) index(k *keptRelation) {
	if _, ok := rs.byKey[k.Key]; !ok {
		rs.order = append(rs.order, k.Key)
	}
	rs.byKey[k.Key] = k
	for _, id := range []string{k.StanzaID, k.OriginID, k.MsgID} {
		if id != "" {
			rs.refs[k.Room+"\x00"+id] = k.Key
		}
	}
	for _, id := range k.packets() {
		rs.packet[id] = k.Key
	}
}

// packets are the mesh packet ids the message is.
func (r *relation) packets() []uint32 {
	var ids []uint32
	if r.Packet != 0 {
		ids = append(ids, r.Packet)
	}
	for _, w := range r.Wire {
		for _, id := range w {
			if id != 0 {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

// trim forgets the oldest beyond the bounds and returns their spool
// entries; rs.mu is held.
func (rs *relations) trim(now time.Time) []uint64 {
	var gone []uint64
	for len(rs.order) > 0 {
		k, ok := rs.byKey[rs.order[0]]
		if ok && len(rs.order) <= relationsKept && now.Sub(k.At) <= relationsMaxAge {
			break
		}
		rs.order[0] = ""
		rs.order = rs.order[1:]
		if !ok {
			continue
		}
		delete(rs.byKey, k.Key)
		for _, id := range []string{k.StanzaID, k.OriginID, k.MsgID} {
			if ref := k.Room + "\x00" + id; rs.refs[ref] == k.Key {
				delete(rs.refs, ref)
			}
		}
		for _, id := range k.packets() {
			if rs.packet[id] == k.Key {
				delete(rs.packet, id)
			}
		}
		if k.seq != 0 {
			gone = append(gone, k.seq)
		}
	}
	return gone
}

// keep records r (a new message, or a change to one) in memory and on
// disk. rs.mu is held.
func (rs *relations) keep(r relation) {
	k := &keptRelation{relation: r}
	old := rs.byKey[r.Key]
	if rs.spool != nil {
		b, _ := json.Marshal(r)
		seq, _, err := rs.spool.Push(relationsQueue, b, "")
		if err != nil {
			rs.log.Warn("spool: could not keep a message relation; after a restart reactions and replies to it fall back to text", "key", r.Key, "err", err)
		} else {
			k.seq = seq
		}
	}
	var gone []uint64
	if old != nil && old.seq != 0 {
		gone = append(gone, old.seq)
	}
	rs.index(k)
	gone = append(gone, rs.trim(time.Now())...)
	if rs.spool != nil && len(gone) > 0 {
		_ = rs.spool.Ack(relationsQueue, gone...)
	}
}

// add records a new message, unless it is known already (the archive
// offers a message again after a reconnect).
func (rs *relations) add(r relation) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if _, ok := rs.byKey[r.Key]; ok {
		return
	}
	rs.keep(r)
}

// update changes the message with key by fn, if it is known; fn reports
// whether it changed anything.
func (rs *relations) update(key string, fn func(*relation) bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	k, ok := rs.byKey[key]
	if !ok {
		return
	}
	r := k.relation
	r.Wire = cloneWire(r.Wire)
	r.Reactions = slices.Clone(r.Reactions)
	if fn(&r) {
		rs.keep(r)
	}
}

func cloneWire(w map[string][]uint32) map[string][]uint32 {
	if w == nil {
		return nil
	}
	out := make(map[string][]uint32, len(w))
	for k, v := range w {
		out[k] = slices.Clone(v)
	}
	return out
}

// get returns a copy of the message with key.
func (rs *relations) get(key string) (relation, bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	k, ok := rs.byKey[key]
	if !ok {
		return relation{}, false
	}
	r := k.relation
	r.Wire = cloneWire(r.Wire)
	return r, true
}

// byID finds a message of room by an id the room or its sender gave it.
func (rs *relations) byID(room, id string) (relation, bool) {
	if id == "" {
		return relation{}, false
	}
	rs.mu.Lock()
	key, ok := rs.refs[room+"\x00"+id]
	rs.mu.Unlock()
	if !ok {
		return relation{}, false
	}
	return rs.get(key)
}

// byPacket finds a message by a mesh packet id: a mesh text's, or that of
// a part of a room message.
func (rs *relations) byPacket(id uint32) (relation, bool) {
	if id == 0 {
		return relation{}, false
	}
	rs.mu.Lock()
	key, ok := rs.packet[id]
	rs.mu.Unlock()
	if !ok {
		return relation{}, false
	}
	return rs.get(key)
}

// cut shortens s to at most n bytes, at a character, with an ellipsis.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
