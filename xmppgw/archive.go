package xmppgw

import (
	"context"
	"encoding/xml"
	"strings"
	"sync"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/history"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
)

// archive collects the ids of messages a room's archive (XEP-0313) returns,
// so that after a reconnect we resend only what the room never got. The
// room's reflection of our message is our only receipt; when the connection
// dies between sending and the reflection, the archive tells.
type archive struct {
	mu   sync.Mutex
	ids  map[string]map[string]bool // query id -> message ids and origin ids
	msgs map[string][]archived      // query id -> messages, for catch-up queries
}

// archived is a message as the room's archive returns it.
type archived struct {
	ArchiveID  string // the room's id for it (its stanza-id)
	From       jid.JID
	ID         string
	Body       string
	OriginID   string
	OccupantID string
	Ext        msgExt
}

type mamResult struct {
	XMLName xml.Name `xml:"message"`
	Result  struct {
		QueryID   string `xml:"queryid,attr"`
		ID        string `xml:"id,attr"`
		Forwarded struct {
			Message struct {
				ID         string   `xml:"id,attr"`
				From       jid.JID  `xml:"from,attr"`
				Type       string   `xml:"type,attr"`
				Bodies     []string `xml:"body"`
				OriginID   *idElem  `xml:"urn:xmpp:sid:0 origin-id"`
				OccupantID *idElem  `xml:"urn:xmpp:occupant-id:0 occupant-id"`
				msgExt
			} `xml:"jabber:client message"`
		} `xml:"urn:xmpp:forward:0 forwarded"`
	} `xml:"urn:xmpp:mam:2 result"`
}

// handle runs inside Serve for each archive result.
func (a *archive) handle(_ stanza.Message, t xmlstream.TokenReadEncoder) error {
	var r mamResult
	if xml.NewTokenDecoder(t).Decode(&r) != nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	set := a.ids[r.Result.QueryID]
	if set == nil {
		return nil // not a query of ours
	}
	m := r.Result.Forwarded.Message
	set[m.ID] = true
	am := archived{ArchiveID: r.Result.ID, From: m.From, ID: m.ID, Ext: m.msgExt}
	if m.OriginID != nil {
		set[m.OriginID.ID] = true
		am.OriginID = m.OriginID.ID
	}
	if m.OccupantID != nil {
		am.OccupantID = m.OccupantID.ID
	}
	if (len(m.Bodies) > 0 || m.Reactions != nil || m.Retract != nil) && m.Type == "groupchat" {
		if len(m.Bodies) > 0 {
			am.Body = m.Bodies[0]
		}
		a.msgs[r.Result.QueryID] = append(a.msgs[r.Result.QueryID], am)
	}
	return nil
}

// seenSince returns the ids of the room's archived messages after the
// room's message afterID (when known) or else since t, paging through the
// archive. Serve hands over every result before the final IQ reply, so a
// page is complete when its query returns. ok is false when the room keeps
// no archive or the query fails.
func (a *archive) seenSince(ctx context.Context, s *xmpp.Session, r *room, afterID string, t time.Time) (map[string]bool, bool) {
	set, _, ok := a.query(ctx, s, r, afterID, t)
	return set, ok
}

// since returns the room's messages after afterID, in order.
func (a *archive) since(ctx context.Context, s *xmpp.Session, r *room, afterID string) ([]archived, bool) {
	_, msgs, ok := a.query(ctx, s, r, afterID, time.Time{})
	return msgs, ok
}

func (a *archive) query(ctx context.Context, s *xmpp.Session, r *room, afterID string, t time.Time) (set map[string]bool, lastMsgs []archived, ok bool) {
	qid := randomID()
	set = map[string]bool{}
	a.mu.Lock()
	if a.ids == nil {
		a.ids, a.msgs = map[string]map[string]bool{}, map[string][]archived{}
	}
	a.ids[qid] = set
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.ids, qid)
		lastMsgs = a.msgs[qid]
		delete(a.msgs, qid)
		a.mu.Unlock()
	}()
	deadline := time.Now().Add(20 * time.Second)
	q := &history.Query{ID: qid, AfterID: afterID, Limit: 100}
	if afterID == "" {
		q.Start = t
	}
	const maxPages = 20
	for page := 0; ; page++ {
		var res history.Result
		qctx, release := callCtx(ctx, time.Until(deadline))
		err := s.UnmarshalIQ(qctx, stanza.IQ{Type: stanza.SetIQ, To: r.cfg.JID}.Wrap(q.TokenReader()), &res)
		release()
		if err != nil {
			return nil, nil, false
		}
		if res.Complete || res.Set.Last == "" || page == maxPages {
			break
		}
		q.PageID = res.Set.Last
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]bool, len(set))
	for k := range set {
		out[k] = true
	}
	return out, nil, true
}

// roomStart marks a position before the first message of a room whose
// archive was empty when the bridge first joined it.
const roomStart = "*start"

// latest returns the room's id of its newest archived message.
func (a *archive) latest(ctx context.Context, s *xmpp.Session, r *room) (string, bool) {
	q := &history.Query{ID: randomID(), Last: true, Limit: 1}
	var res history.Result
	qctx, release := callCtx(ctx, 20*time.Second)
	err := s.UnmarshalIQ(qctx, stanza.IQ{Type: stanza.SetIQ, To: r.cfg.JID}.Wrap(q.TokenReader()), &res)
	release()
	if err != nil {
		return "", false
	}
	return res.Set.Last, true
}

// catchUp sends to the mesh what people said in the room while the bridge
// was away: the archive's messages after the last one the bridge saw. Each
// goes through the same checks as a live message, and a message already sent
// on (seen live before a crash) is not sent again.
func (g *Gateway) catchUp(ctx context.Context, c *conn, r *room) error {
	if r.lastStanza == "" {
		// First join: nothing is owed to the mesh, but from now on the
		// bridge knows where it is in the room.
		if id, ok := c.arch.latest(ctx, c.s, r); ok {
			if id == "" {
				id = roomStart // an empty archive: everything later is new
			}
			g.remember(r, id)
		}
		return nil
	}
	after := r.lastStanza
	if after == roomStart {
		after = ""
	}
	msgs, ok := c.arch.since(ctx, c.s, r, after)
	if !ok && !r.lastSeenAt.IsZero() {
		// The room does not know that message any more (it was recreated,
		// say after a server restart): take what it has since the time the
		// bridge last saw the room. What was seen already is skipped below.
		g.log.Info("the room's archive no longer has the bridge's last message; catching up by time", "room", r.cfg.JID.String(), "since", r.lastSeenAt.Format(time.RFC3339))
		_, msgs, ok = c.arch.query(ctx, c.s, r, "", r.lastSeenAt.Add(-time.Minute))
	}
	if !ok {
		g.log.Warn("could not read the room's archive; messages said while the bridge was away are not sent to the mesh", "room", r.cfg.JID.String())
		if id, ok := c.arch.latest(ctx, c.s, r); ok {
			if id == "" {
				id = roomStart
			}
			g.remember(r, id)
		}
		return nil
	}
	n := 0
	for _, m := range msgs {
		if strings.HasPrefix(m.OriginID, "mesh-") && r.trusted[m.From.String()] {
			r.notePeerPost(m.OriginID, m.From.String()) // not to be posted again by this bridge
		}
		if !g.ours(r, m.From, m.OccupantID, m.OriginID, m.ID) && m.From.Resourcepart() != "" {
			n++
			if err := g.fromRoomMsg(ctx, c, r, roomMsg{from: m.From, body: m.Body, key: roomMsgKey(r, m.ArchiveID, m.OriginID, m.ID),
				sid: m.ArchiveID, oid: m.OriginID, id: m.ID, occupID: m.OccupantID, ext: m.Ext}); err != nil {
				return err
			}
		}
		// Only past a message once it has been dealt with: a crash
		// before finds it again.
		if m.ArchiveID != "" {
			g.remember(r, m.ArchiveID)
		}
	}
	if n > 0 {
		g.log.Info("caught up with what was said in the room while the bridge was away", "room", r.cfg.JID.String(), "messages", n)
	}
	return nil
}
