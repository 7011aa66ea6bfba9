package xmppgw

import (
	"cmp"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"mellium.im/xmpp/jid"

	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// One-to-one chat between XMPP users and mesh nodes. A user writes to the
// bridge's own JID, "@ANA see you at 6" (see address.go); the text goes to
// that node as a direct message asking for an acknowledgement, and the
// node's acknowledgement comes back as a XEP-0184 receipt, its refusal (or
// none within Config.DMAckTimeout) as a reply saying why. A direct message
// from a node to the bridge's radio goes to the user that node last talked
// to through the bridge, else to Config.DMJID.

// statusNonAnonymous, in our own presence in a room, says the room shows
// every occupant's real JID.
const statusNonAnonymous = 100

// Limits on what one-to-one chat keeps in memory.
const (
	maxPendingDMs = 256  // messages waiting for the mesh's answer
	maxTalkers    = 1000 // nodes whose last XMPP correspondent is kept
	maxUsers      = 1024 // users with a rate bucket or a current correspondent
	maxOccupants  = 5000 // occupants remembered per room
	// currentFor is how long a message without an address still goes to
	// the node the user last exchanged with.
	currentFor = time.Hour
)

// talkersQueue keeps, in the spool, the XMPP user each node last talked
// to, so that the node's answer finds them after a restart.
const talkersQueue = "dm-talkers"

// directs is the state of one-to-one chat. Its own lock: it is reached from
// the session loop and from the intake loop.
type directs struct {
	mu      sync.Mutex
	pending map[uint32]*dmPart // by request id
	msgs    int                // messages in pending
	talkers map[uint32]talker  // node -> the user it last talked to
	loaded  bool               // talkers read from the spool
	current map[string]peer    // user (bare JID) -> node last exchanged with
	buckets map[string]*bucket // by user (bare JID) or node id
	// The bridged rooms' occupants (room -> occupant JID -> occupant), and
	// whether a room shows its occupants' real JIDs.
	occupants map[string]map[string]occupant
	showsJIDs map[string]bool
	heard     map[uint32]*heardNode
	status    map[string]sentStatus // by room: the status last put in the presence
	// out carries stanzas for the session loop to send: receipts and
	// replies decided outside it.
	out chan any
}

func newDirects() *directs {
	return &directs{
		pending: map[uint32]*dmPart{}, talkers: map[uint32]talker{}, current: map[string]peer{},
		buckets: map[string]*bucket{}, occupants: map[string]map[string]occupant{}, showsJIDs: map[string]bool{},
		heard: map[uint32]*heardNode{}, status: map[string]sentStatus{}, out: make(chan any, 256),
	}
}

type talker struct {
	user string // bare JID
	seq  uint64 // its spool entry; 0 when not spooled
}

type peer struct {
	node uint32
	at   time.Time
}

type occupant struct {
	nick string
	real string // bare real JID; "" when the room does not show it
}

// dmMessage is a user's message to a node, in one or more parts, waiting
// for the mesh's answer to each.
type dmMessage struct {
	user    jid.JID // full JID: the receipt goes to the client that asked
	id      string  // the message's id attribute, which the receipt names
	receipt bool    // the client asked for a receipt
	node    nodeName
	words   string
	parts   []*dmPart
	timer   *time.Timer
	done    bool
}

type dmPart struct {
	msg   *dmMessage
	id    uint32
	taken bool // the radio took it
	acked bool // the node acknowledged it
}

// dmRecord is a talker as kept in the spool.
type dmRecord struct {
	Node string `json:"node"`
	User string `json:"user"`
}

// bucket is a token bucket: burst tokens, one more every interval.
type bucket struct {
	tokens float64
	at     time.Time
}

// take spends a token if there is one, else reports how long until there is.
func (b *bucket) take(now time.Time, burst int, every time.Duration) (time.Duration, bool) {
	b.tokens = min(float64(burst), b.tokens+float64(now.Sub(b.at))/float64(every))
	b.at = now
	if b.tokens >= 1 {
		b.tokens--
		return 0, true
	}
	return time.Duration((1 - b.tokens) * float64(every)), false
}

// allow applies the per-sender limit to key.
func (d *directs) allow(key string, now time.Time, burst int, every time.Duration) (time.Duration, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	b := d.buckets[key]
	if b == nil {
		if len(d.buckets) >= maxUsers {
			// Forget those whose bucket is full again: they lose nothing.
			for k, o := range d.buckets {
				if o.tokens+float64(now.Sub(o.at))/float64(every) >= float64(burst) {
					delete(d.buckets, k)
				}
			}
			if len(d.buckets) >= maxUsers {
				return every, false
			}
		}
		b = &bucket{tokens: float64(burst), at: now}
		d.buckets[key] = b
	}
	return b.take(now, burst, every)
}

// sendOut hands a stanza to the session loop.
func (g *Gateway) sendOut(v any) {
	select {
	case g.dm.out <- v:
	default:
		g.log.Warn("one-to-one chat queue full; a reply to a user is dropped")
	}
}

// chat is a one-to-one message from the bridge.
func chat(to jid.JID, body string) outMessage {
	return outMessage{ID: randomID(), To: to.String(), Type: "chat", Body: body}
}

// receiptMessage is a XEP-0184 receipt: the message id reached its
// recipient. The hint has servers archive it, so every client of the user
// sees the message delivered.
type receiptMessage struct {
	XMLName  xml.Name    `xml:"message"`
	ID       string      `xml:"id,attr"`
	To       string      `xml:"to,attr"`
	Type     string      `xml:"type,attr"`
	Received receiptElem `xml:"urn:xmpp:receipts received"`
	Store    struct{}    `xml:"urn:xmpp:hints store"`
}

type receiptElem struct {
	ID string `xml:"id,attr"`
}

// availablePresence is the account's own presence: one-to-one messages
// to its bare JID are delivered only to an available resource.
type availablePresence struct {
	XMLName xml.Name `xml:"presence"`
	ID      string   `xml:"id,attr"`
}

// onDirect handles a one-to-one message to the bridge's JID.
func (g *Gateway) onDirect(ctx context.Context, c *conn, rooms []*room, msg *inMessage) error {
	from := msg.From
	body := strings.TrimSpace(msg.body())
	switch {
	case msg.Type == "error":
		g.log.Debug("a one-to-one message from the bridge bounced", "to", from.String())
		return nil
	case from.String() == "" || from.Bare().Equal(g.cfg.JID.Bare()) || body == "" || msg.Delay != nil:
		return nil // our own account, chat states, receipts, offline history
	case g.roomOf(rooms, from) != nil:
		return c.send(ctx, chat(from, fmt.Sprintf("Private messages through the room are not read. To write to a mesh node, message %s directly: @ANA see you at 6.", g.cfg.JID.Bare())))
	}
	nick, ok, why := g.mayDirect(from)
	if !ok {
		g.log.Info("one-to-one message from an account not allowed to use the bridge", "from", from.Bare().String())
		return c.send(ctx, chat(from, why))
	}
	if cmd, isCmd := strings.CutPrefix(body, "!"); isCmd && isCommand(cmd) {
		return c.send(ctx, chat(from, g.commandReply(cmd, "", nick, true)))
	}
	node, text, reply := g.addressee(from, body)
	if reply != "" {
		return c.send(ctx, chat(from, reply))
	}
	// Checked once the message could go: a mistyped name costs no turn.
	if wait, ok := g.dm.allow(from.Bare().String(), time.Now(), g.cfg.DMBurst, g.cfg.DMInterval); !ok {
		return c.send(ctx, chat(from, fmt.Sprintf("⏳ Not sent: to spare the mesh's airtime the bridge takes at most %d direct messages in a row from one person, then one every %v. Try again in %v.",
			g.cfg.DMBurst, g.cfg.DMInterval, wait.Truncate(time.Second)+time.Second)))
	}
	if reply := g.sendDirect(from, msg, nick, node, text); reply != "" {
		return c.send(ctx, chat(from, reply))
	}
	return nil
}

// addressee finds the node a message is for: the address it starts with,
// else the node the user last exchanged with. reply is the answer when
// there is none.
func (g *Gateway) addressee(from jid.JID, body string) (node nodeName, text, reply string) {
	a, err := parseAddress(body)
	nodes := g.nodeNames()
	if err == errNoAddress {
		g.dm.mu.Lock()
		cur, ok := g.dm.current[from.Bare().String()]
		g.dm.mu.Unlock()
		if ok && time.Since(cur.at) < currentFor {
			for _, n := range nodes {
				if n.num == cur.node {
					return n, body, ""
				}
			}
			return nodeName{num: cur.node}, body, ""
		}
	}
	if err != nil {
		return nodeName{}, "", addressHelp(err, nil, "", false)
	}
	res := resolveAddress(a, nodes)
	if !res.ok {
		return nodeName{}, "", addressHelp(nil, res.candidates, a.name, res.ambiguous)
	}
	if res.text == "" {
		return nodeName{}, "", addressHelp(errNothingSaid, nil, "", false)
	}
	if res.to.num == mesh.Broadcast || res.to.num == 0 {
		return nodeName{}, "", addressHelp(errBadNodeID, nil, "", false) // a direct message is to one node
	}
	g.mu.Lock()
	_, bridge := g.radios.isBridgeRadio(res.to.num)
	g.mu.Unlock()
	if bridge {
		return nodeName{}, "", fmt.Sprintf("Not sent: %s is a bridge's own radio; write to the node you mean.", mesh.NodeID(res.to.num))
	}
	return res.to, res.text, ""
}

// sendDirect sends a user's text to a node, asking for an acknowledgement;
// reply is the answer when it cannot.
func (g *Gateway) sendDirect(from jid.JID, msg *inMessage, nick string, node nodeName, text string) (reply string) {
	chunks, err := mesh.Chunks(nick, text, topics.MaxTextBytes)
	if err != nil || len(chunks) == 0 {
		return fmt.Sprintf("Not sent: %v.", cmp.Or(err, errNothingSaid))
	}
	if len(chunks) > g.cfg.MaxChunks {
		return fmt.Sprintf("Not sent: your message would take %d mesh packets; at most %d are sent per message. Please shorten it.", len(chunks), g.cfg.MaxChunks)
	}
	radio := g.dmRadio(node.num)
	if radio == "" {
		return "📡 Not sent: the radio is not connected right now. Try again when it is back (!status says)."
	}
	id := msg.ID
	if id == "" {
		id = randomID()
	}
	m := &dmMessage{user: from, id: msg.ID, receipt: msg.ReceiptRequest != nil && msg.ID != "", node: node, words: firstWords(text)}
	key := "dm:" + from.Bare().String() + ":" + id + "@" + radio
	g.dm.mu.Lock()
	if g.dm.msgs >= maxPendingDMs {
		g.dm.mu.Unlock()
		return "Not sent: too many direct messages wait for the mesh's answer right now. Try again in a few minutes."
	}
	for i := range chunks {
		p := &dmPart{msg: m, id: requestID(key, i)}
		m.parts = append(m.parts, p)
		g.dm.pending[p.id] = p
	}
	g.dm.msgs++
	m.timer = time.AfterFunc(g.cfg.DMAckTimeout, func() { g.dmTimedOut(m) })
	g.dm.mu.Unlock()
	g.noteTalker(node.num, from.Bare())
	for i, c := range chunks {
		req := topics.SendRequest{Origin: topics.OriginXMPP, ID: m.parts[i].id, To: node.num,
			Data: &meshpb.Data{Portnum: meshpb.PortNum_TEXT_MESSAGE_APP, Payload: []byte(c)}}
		if err := g.publishRequest(radio, req); err != nil {
			g.finishDM(m)
			return fmt.Sprintf("Not sent: the bridge could not hand it to the radio (%v).", err)
		}
	}
	g.log.Info("direct message to a mesh node", "from", from.Bare().String(), "to", mesh.NodeID(node.num), "parts", len(chunks), "radio", radio)
	return ""
}

func (g *Gateway) publishRequest(radio string, req topics.SendRequest) error {
	b, err := req.Marshal()
	if err != nil {
		return err
	}
	return g.bus.Publish(topics.MeshTXTo(radio), b, false)
}

// dmRadio picks the radio that sends to node: the one that last heard it,
// if online, else the online radio of this gateway with the lowest node
// number; "" when none is online.
func (g *Gateway) dmRadio(node uint32) string {
	g.dm.mu.Lock()
	via := ""
	if h := g.dm.heard[node]; h != nil {
		via = h.via
	}
	g.dm.mu.Unlock()
	g.mu.Lock()
	defer g.mu.Unlock()
	if s := g.radios.byID[via]; s != nil && s.localOnline() {
		return via
	}
	var best *radioSide
	for _, s := range g.radios.byID {
		if s.localOnline() && (best == nil || s.num < best.num) {
			best = s
		}
	}
	if best == nil {
		return ""
	}
	return best.id
}

// onDirectResult takes the outcome of a part of a direct message; it
// reports false for a result that is not one.
func (g *Gateway) onDirectResult(res topics.Result) bool {
	if res.Origin != topics.OriginXMPP {
		return false
	}
	g.dm.mu.Lock()
	p, ok := g.dm.pending[res.RequestID]
	if !ok {
		g.dm.mu.Unlock()
		return false
	}
	m := p.msg
	switch {
	case res.Reason != meshpb.Routing_NONE:
		g.dm.mu.Unlock()
		g.finishDM(m)
		g.log.Info("a direct message did not reach its node", "to", mesh.NodeID(m.node.num), "reason", res.Reason.String())
		g.sendOut(chat(m.user, fmt.Sprintf("⚠ Not delivered to %s: “%s” — %s.", m.node.shortLabel(), m.words, whyNotDelivered(res.Reason, m.node))))
		return true
	case !p.taken:
		// The radio's word comes first: it took the packet. The node's
		// comes after, if at all.
		p.taken = true
		g.dm.mu.Unlock()
		return true
	}
	p.acked = true
	all := !slices.ContainsFunc(m.parts, func(p *dmPart) bool { return !p.acked })
	g.dm.mu.Unlock()
	if !all {
		return true
	}
	g.finishDM(m)
	g.log.Info("a direct message was acknowledged by its node", "to", mesh.NodeID(m.node.num))
	if m.receipt {
		g.sendOut(receiptMessage{ID: randomID(), To: m.user.String(), Type: "chat", Received: receiptElem{ID: m.id}})
	}
	return true
}

// dmTimedOut gives up on a message the mesh did not answer in time.
func (g *Gateway) dmTimedOut(m *dmMessage) {
	g.dm.mu.Lock()
	done, taken := m.done, !slices.ContainsFunc(m.parts, func(p *dmPart) bool { return !p.taken })
	g.dm.mu.Unlock()
	if done {
		return
	}
	g.finishDM(m)
	why := fmt.Sprintf("no acknowledgement from %s within %v. It may be switched off or out of range (or its answer was lost: it may still have arrived).", m.node.shortLabel(), g.cfg.DMAckTimeout)
	if !taken {
		why = "the radio did not take it in time (it may be busy, or its airtime spent); it was not sent."
	}
	g.log.Info("a direct message was not acknowledged in time", "to", mesh.NodeID(m.node.num), "taken", taken)
	g.sendOut(chat(m.user, fmt.Sprintf("⚠ Not delivered to %s: “%s” — %s", m.node.shortLabel(), m.words, why)))
}

// finishDM forgets a message, once.
func (g *Gateway) finishDM(m *dmMessage) {
	g.dm.mu.Lock()
	defer g.dm.mu.Unlock()
	if m.done {
		return
	}
	m.done = true
	m.timer.Stop()
	for _, p := range m.parts {
		delete(g.dm.pending, p.id)
	}
	g.dm.msgs--
}

// whyNotDelivered says in plain words why the mesh did not deliver a
// direct message to n.
func whyNotDelivered(reason meshpb.Routing_Error, n nodeName) string {
	name := n.shortLabel()
	switch reason {
	case meshpb.Routing_MAX_RETRANSMIT:
		return "the radio sent it several times and heard no node pass it on; " + name + " may be switched off or out of range"
	case meshpb.Routing_NO_RESPONSE:
		return name + " did not answer"
	case meshpb.Routing_NO_ROUTE:
		return "the mesh knows no way to " + name
	case meshpb.Routing_TIMEOUT:
		return "no acknowledgement came in time"
	case meshpb.Routing_PKI_FAILED, meshpb.Routing_PKI_UNKNOWN_PUBKEY, meshpb.Routing_PKI_SEND_FAIL_PUBLIC_KEY:
		return "the radio could not encrypt it for " + name + " (it does not have " + name + "'s key yet; it arrives with " + name + "'s node info, so try again later)"
	case meshpb.Routing_NOT_AUTHORIZED, meshpb.Routing_ADMIN_PUBLIC_KEY_UNAUTHORIZED:
		return name + " refused it"
	case meshpb.Routing_GOT_NAK:
		return name + " refused it"
	}
	return describe(reason)
}

// mayDirect reports whether from may write to mesh nodes through the
// bridge, with the name the mesh sees for them; why is the refusal.
func (g *Gateway) mayDirect(from jid.JID) (nick string, ok bool, why string) {
	bare := from.Bare()
	nick = from.Localpart()
	allowed := slices.ContainsFunc(g.cfg.DMAllow, func(a jid.JID) bool { return a.Bare().Equal(bare) })
	g.dm.mu.Lock()
	shows := false
	for _, r := range g.cfg.Rooms {
		room := r.JID.String()
		shows = shows || g.dm.showsJIDs[room]
		for _, o := range g.dm.occupants[room] {
			if o.real == bare.String() {
				nick, allowed = o.nick, true
			}
		}
	}
	g.dm.mu.Unlock()
	if allowed {
		return nick, true, ""
	}
	var names []string
	for _, r := range g.cfg.Rooms {
		names = append(names, r.JID.String())
	}
	rooms := strings.Join(names, ", ")
	if !shows {
		return "", false, fmt.Sprintf("Sorry, this bridge writes to mesh nodes only for the people in %s, and that room does not show me its occupants' addresses, so I cannot tell whether you are there. Ask the bridge's operator to add you to --dm-allow.", rooms)
	}
	return "", false, fmt.Sprintf("Sorry, this bridge writes to mesh nodes only for the people in %s. Join it and write again, or ask the bridge's operator to add you to --dm-allow.", rooms)
}

// noteOccupant keeps track of who is in a bridged room, from its presences.
func (g *Gateway) noteOccupant(r *room, p *inPresence) {
	if p.Type == "error" || p.From.Resourcepart() == "" {
		return
	}
	room := r.cfg.JID.String()
	g.dm.mu.Lock()
	defer g.dm.mu.Unlock()
	if p.has(statusSelf) || p.From.Equal(r.occupant) {
		if p.has(statusNonAnonymous) {
			g.dm.showsJIDs[room] = true
		}
		return // the room tells us our own JID either way
	}
	occ := g.dm.occupants[room]
	if occ == nil {
		occ = map[string]occupant{}
		g.dm.occupants[room] = occ
	}
	key := p.From.String()
	if p.Type == "unavailable" {
		delete(occ, key)
		return
	}
	o := occupant{nick: p.From.Resourcepart()}
	if p.X != nil && len(p.X.Items) > 0 && p.X.Items[0].JID != "" {
		if real, err := jid.Parse(p.X.Items[0].JID); err == nil {
			o.real = real.Bare().String()
			g.dm.showsJIDs[room] = true
		}
	}
	if _, known := occ[key]; !known && len(occ) >= maxOccupants {
		return
	}
	occ[key] = o
}

// forgetOccupants starts a room's list over: joining, the bridge hears
// every occupant anew.
func (g *Gateway) forgetOccupants(room string) {
	g.dm.mu.Lock()
	defer g.dm.mu.Unlock()
	delete(g.dm.occupants, room)
	delete(g.dm.showsJIDs, room)
}

// nodeNames lists the nodes a user may write to: every node with a record
// but the bridges' own radios.
func (g *Gateway) nodeNames() []nodeName {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]nodeName, 0, len(g.nodes))
	for _, n := range g.nodes {
		num := cmp.Or(n.Num, nodeNum(n.ID))
		if _, bridge := g.radios.isBridgeRadio(num); bridge || num == 0 {
			continue
		}
		out = append(out, nodeName{num: num, short: n.ShortName, long: n.LongName})
	}
	return out
}

// noteTalker records that user wrote to node, so the node's answer comes
// back to them, also after a restart.
func (g *Gateway) noteTalker(node uint32, user jid.JID) {
	g.loadTalkers()
	now := time.Now()
	g.dm.mu.Lock()
	g.setCurrent(user.String(), node, now)
	old, had := g.dm.talkers[node]
	if had && old.user == user.String() && (old.seq != 0 || g.cfg.Spool == nil) {
		g.dm.mu.Unlock()
		return
	}
	var drop []uint64
	if had {
		drop = append(drop, old.seq)
	} else if len(g.dm.talkers) >= maxTalkers {
		// The longest unheard-of first: the oldest entry in the spool.
		oldest := uint32(0)
		for n, t := range g.dm.talkers {
			if oldest == 0 || t.seq < g.dm.talkers[oldest].seq {
				oldest = n
			}
		}
		drop = append(drop, g.dm.talkers[oldest].seq)
		delete(g.dm.talkers, oldest)
	}
	g.dm.talkers[node] = talker{user: user.String()}
	g.dm.mu.Unlock()
	if g.cfg.Spool == nil {
		return
	}
	b, _ := json.Marshal(dmRecord{Node: mesh.NodeID(node), User: user.String()})
	seq, _, err := g.cfg.Spool.Push(talkersQueue, b, "")
	if err != nil {
		g.log.Warn("spool: could not record who a node talks to; its answer may not find them after a restart", "node", mesh.NodeID(node), "err", err)
		return
	}
	g.dm.mu.Lock()
	if t, ok := g.dm.talkers[node]; ok && t.user == user.String() {
		g.dm.talkers[node] = talker{user: t.user, seq: seq}
	} else {
		drop = append(drop, seq) // replaced meanwhile
	}
	g.dm.mu.Unlock()
	for _, s := range drop {
		if s != 0 {
			_ = g.cfg.Spool.Ack(talkersQueue, s)
		}
	}
}

// setCurrent makes node the one user's messages without an address go
// to; g.dm.mu is held.
func (g *Gateway) setCurrent(user string, node uint32, now time.Time) {
	if _, ok := g.dm.current[user]; !ok && len(g.dm.current) >= maxUsers {
		for u, c := range g.dm.current {
			if now.Sub(c.at) >= currentFor {
				delete(g.dm.current, u)
			}
		}
		if len(g.dm.current) >= maxUsers {
			return
		}
	}
	g.dm.current[user] = peer{node: node, at: now}
}

// loadTalkers reads, once, who each node last talked to, as kept before
// a restart.
func (g *Gateway) loadTalkers() {
	g.dm.mu.Lock()
	loaded := g.dm.loaded
	g.dm.loaded = true
	g.dm.mu.Unlock()
	if loaded || g.cfg.Spool == nil {
		return
	}
	items, err := g.cfg.Spool.Peek(talkersQueue, 0)
	if err != nil {
		g.log.Error("spool: could not read who the nodes talked to", "err", err)
		return
	}
	g.dm.mu.Lock()
	var stale []uint64
	for _, it := range items {
		var r dmRecord
		num := uint32(0)
		if json.Unmarshal(it.Data, &r) == nil {
			num = nodeNum(r.Node)
		}
		u, err := jid.Parse(r.User)
		if num == 0 || err != nil {
			stale = append(stale, it.Seq)
			continue
		}
		if old, ok := g.dm.talkers[num]; ok {
			stale = append(stale, old.seq) // items come oldest first
		}
		g.dm.talkers[num] = talker{user: u.String(), seq: it.Seq}
	}
	g.dm.mu.Unlock()
	if len(stale) > 0 {
		_ = g.cfg.Spool.Ack(talkersQueue, stale...)
	}
}

// directFromMesh handles a direct message a node sent to the bridge's
// radio: a command is answered on the mesh; anything else goes to the
// user the node last talked to, else to Config.DMJID. ok is false when
// it goes to no one.
func (g *Gateway) directFromMesh(radio string, p *meshpb.MeshPacket, text string) (to string, ok bool) {
	from := p.GetFrom()
	if cmd, isCmd := strings.CutPrefix(strings.TrimSpace(text), "!"); isCmd && isCommand(cmd) {
		g.answerOnMesh(radio, p, cmd)
		return "", false
	}
	g.loadTalkers()
	g.dm.mu.Lock()
	t, known := g.dm.talkers[from]
	if known {
		g.setCurrent(t.user, from, time.Now())
	}
	occupancyKnown := false
	for _, occ := range g.dm.occupants {
		occupancyKnown = occupancyKnown || len(occ) > 0
	}
	g.dm.mu.Unlock()
	if known && g.Connected() && occupancyKnown {
		// Still one who may write through the bridge (in a bridged room,
		// or listed)? Someone removed since gets no more of the node's
		// messages. Before the rooms have told their occupants, who is in
		// them is not known, and the message goes as before.
		if u, err := jid.Parse(t.user); err != nil {
			known = false
		} else if _, ok, _ := g.mayDirect(u); !ok {
			g.log.Info("the node's last correspondent may no longer write through the bridge; not forwarded to them", "from", mesh.NodeID(from))
			known = false
		}
	}
	switch {
	case known:
		return t.user, true
	case g.cfg.DMJID.String() != "":
		return g.cfg.DMJID.String(), true
	}
	g.log.Info("direct message to the bridge's radio not forwarded (no one talked to the node, and no DM recipient configured)", "from", mesh.NodeID(from))
	return "", false
}
