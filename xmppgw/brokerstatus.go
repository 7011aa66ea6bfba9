package xmppgw

import (
	"time"

	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// sessionStatus is what was last published of the XMPP session on the
// broker: its status record (topics.XMPPStatus), which Home Assistant and
// other local tools read. Only Run's goroutine, the session's, touches it.
type sessionStatus struct {
	rec     topics.XMPPStatusRecord // as last published; State "" before the first
	refused bool                    // the account cannot name a status topic; said once
	failing bool                    // publishing fails; said once until it works again
}

// publishSession publishes the session's state, and how many rooms it is
// in, when either changed since last published: offline as Run starts and
// whenever a session ends (Run stopping too), online as a session starts,
// and the rooms as they are joined and left.
func (g *Gateway) publishSession(state topics.LinkState, rooms int) {
	st := &g.sessionState
	if st.rec.State == state && st.rec.Rooms == rooms {
		return
	}
	rec := topics.XMPPStatusRecord{State: state, JID: g.cfg.JID.Bare().String(), Since: st.rec.Since, Rooms: rooms}
	if state != st.rec.State {
		rec.Since = time.Now().UTC().Format(time.RFC3339)
	}
	b, err := rec.Marshal()
	if err != nil {
		if !st.refused {
			st.refused = true
			g.log.Warn("the XMPP side's state is not published on the broker: its account cannot name a topic", "err", err)
		}
		return
	}
	// Kept only once published, so a failed publish is tried again with
	// the next change or the next tick of the session.
	if err := g.bus.Publish(topics.XMPPStatus(rec.JID), b, true); err != nil {
		if !st.failing {
			st.failing = true
			g.log.Warn("publish failed", "topic", topics.XMPPStatus(rec.JID), "err", err)
		}
		return
	}
	st.rec, st.failing = rec, false
}

// sessionUp publishes that a session has started: online, in no room yet.
func (g *Gateway) sessionUp() { g.publishSession(topics.LinkOnline, 0) }

// publishRooms publishes, on the session's tick, how many rooms the
// session is in, when that changed.
func (g *Gateway) publishRooms(rooms []*room) {
	n := 0
	for _, r := range rooms {
		if r.joined() {
			n++
		}
	}
	g.publishSession(topics.LinkOnline, n)
}
