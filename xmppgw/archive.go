package xmppgw

import (
	"context"
	"encoding/xml"
	"sync"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/history"
	"mellium.im/xmpp/stanza"
)

// archive collects the ids of messages a room's archive (XEP-0313) returns,
// so that after a reconnect we resend only what the room never got. The
// room's reflection of our message is our only receipt; when the connection
// dies between sending and the reflection, the archive tells.
type archive struct {
	mu  sync.Mutex
	ids map[string]map[string]bool // query id -> message ids and origin ids
}

type mamResult struct {
	XMLName xml.Name `xml:"message"`
	Result  struct {
		QueryID   string `xml:"queryid,attr"`
		Forwarded struct {
			Message struct {
				ID       string  `xml:"id,attr"`
				OriginID *idElem `xml:"urn:xmpp:sid:0 origin-id"`
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
	if m.OriginID != nil {
		set[m.OriginID.ID] = true
	}
	return nil
}

// seenSince returns the ids of the room's archived messages after the
// room's message afterID (when known) or else since t, paging through the
// archive. Serve hands over every result before the final IQ reply, so a
// page is complete when its query returns. ok is false when the room keeps
// no archive or the query fails.
func (a *archive) seenSince(ctx context.Context, s *xmpp.Session, r *room, afterID string, t time.Time) (map[string]bool, bool) {
	qid := randomID()
	set := map[string]bool{}
	a.mu.Lock()
	if a.ids == nil {
		a.ids = map[string]map[string]bool{}
	}
	a.ids[qid] = set
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.ids, qid)
		a.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	q := &history.Query{ID: qid, AfterID: afterID, Limit: 100}
	if afterID == "" {
		q.Start = t
	}
	const maxPages = 20
	for page := 0; ; page++ {
		var res history.Result
		if err := s.UnmarshalIQ(ctx, stanza.IQ{Type: stanza.SetIQ, To: r.cfg.JID}.Wrap(q.TokenReader()), &res); err != nil {
			return nil, false
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
	return out, true
}
