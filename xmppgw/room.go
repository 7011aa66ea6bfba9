package xmppgw

import (
	"log/slog"
	"strconv"
	"time"

	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
)

// roomState is where the bridge stands with a room.
type roomState int

const (
	// roomJoining: not in the room; our join presence is sent, or about to be.
	roomJoining roomState = iota
	roomJoined
	// roomWaiting: removed, or refused for now; join again at rejoinAt.
	roomWaiting
	// roomGone: banned, the room destroyed, or it refuses us: not bridged
	// any more.
	roomGone
)

// step is what the session must do for a room after its state moved. The
// state machine itself does no I/O.
type step int

const (
	stepNone  step = iota
	stepJoin       // send our join presence (after beginJoin)
	stepFlush      // we are in: post what waited for the room
)

// room is one bridged multi-user chat: our place in it, moved by the
// room's presences, and what waits to be posted to it.
type room struct {
	cfg         Room
	log         *slog.Logger
	rejoinDelay time.Duration // after a removal, doubled while removals repeat
	backoffMax  time.Duration

	state      roomState
	nick       string  // current nick: cfg.Nick, or with a suffix after a conflict
	occupant   jid.JID // room@service/nick we joined as
	occupantID string  // our XEP-0421 occupant id, when the room gives one
	joinSent   time.Time
	rejoinAt   time.Time // when state is roomWaiting
	conflicts  int
	joinedAt   time.Time
	removals   int // times removed without staying long; grows the rejoin pause

	lastStanza string // the room's id of the last message we saw in it
	markSeq    uint64 // the spool entry holding lastStanza
	lastSeenAt time.Time
	backlog    []outbound // mesh texts waiting for the room
	unacked    []outbound // posted, not yet reflected by the room, in order
	awaiting   []outbound // tapbacks and replies waiting for the room to confirm their target

	// Other bridges in the room: the ids of the mesh texts they posted
	// (bounded), the texts held for one of them to post, and what this
	// bridge last said in its presence about its radios.
	peerPosted map[string]string // mesh text id -> the occupant that posted it
	trusted    map[string]bool   // occupants that are bridges this one trusts
	held       []heldPost
	advertised string
}

// heldPost is a mesh text another bridge on the same mesh is the one to
// post; this one posts it at due unless that bridge has.
type heldPost struct {
	o   outbound
	due time.Time
}

// notePeerPost records a mesh text another bridge (occupant) posted.
func (r *room) notePeerPost(id, occupant string) {
	if len(r.peerPosted) >= 4096 {
		clear(r.peerPosted)
	}
	r.peerPosted[id] = occupant
}

func newRoom(r Room, c *Config, log *slog.Logger) *room {
	return &room{cfg: r, nick: r.Nick, log: log.With("room", r.JID.String()), rejoinDelay: c.RejoinDelay, backoffMax: c.BackoffMax,
		peerPosted: map[string]string{}, trusted: map[string]bool{}}
}

func (r *room) joined() bool { return r.state == roomJoined }
func (r *room) gone() bool   { return r.state == roomGone }

// reconnected starts the room over on a new connection, which is in no
// room yet.
func (r *room) reconnected() step {
	if r.state == roomGone {
		return stepNone
	}
	r.state, r.rejoinAt = roomJoining, time.Time{}
	return stepJoin
}

// beginJoin records that we are about to ask to join as r.nick. It reports
// false, and gives the room up, if the nick cannot be used.
func (r *room) beginJoin(now time.Time) bool {
	occ, err := r.cfg.JID.WithResource(r.nick)
	if err != nil {
		r.state = roomGone
		r.log.Error("invalid nick for the room", "nick", r.nick, "err", err)
		return false
	}
	r.state, r.occupant, r.joinSent = roomJoining, occ, now
	r.log.Debug("joining room", "nick", r.nick)
	return true
}

// due reports, on the session's tick, whether to send our join now: the
// pause after a removal is over, or the room never answered.
func (r *room) due(now time.Time) bool {
	switch {
	case r.state == roomWaiting && now.After(r.rejoinAt):
		return true
	case r.state == roomJoining && now.Sub(r.joinSent) > 30*time.Second:
		r.log.Warn("no answer to joining the room; trying again")
		return true
	}
	return false
}

// forgotten takes word that the room no longer counts us in (a self-ping,
// a bounced message): if we thought we were in, we join again.
func (r *room) forgotten(msg string, args ...any) step {
	if r.state != roomJoined {
		return stepNone
	}
	r.log.Warn(msg, args...)
	r.state = roomJoining
	return stepJoin
}

// onPresence moves the room's state on a presence from the room.
func (r *room) onPresence(p *inPresence) step {
	self := p.has(statusSelf) || p.From.Equal(r.occupant)
	switch {
	case p.Type == "error":
		return r.onJoinError(p)
	case p.Type == "unavailable" && self:
		r.onRemoved(p)
	case self && r.state != roomJoined && r.state != roomGone:
		if p.has(statusNickAssigned) {
			r.nick = p.From.Resourcepart()
		}
		r.occupant = p.From
		r.state, r.conflicts, r.joinedAt = roomJoined, 0, time.Now()
		if p.OccupantID != nil {
			r.occupantID = p.OccupantID.ID
		}
		r.log.Info("joined room", "nick", r.nick, "channel", r.cfg.label())
		return stepFlush
	}
	return stepNone
}

// onRemoved handles our own unavailable presence: the room removed us,
// destroyed itself, or renamed us.
func (r *room) onRemoved(p *inPresence) {
	// Without a pause scheduled below, the join is retried once it is
	// overdue.
	r.state = roomJoining
	switch {
	case p.X != nil && p.X.Destroy != nil:
		r.state = roomGone
		r.log.Error("room was destroyed; no longer bridging it", "reason", p.reason())
	case p.has(statusBanned):
		r.state = roomGone
		r.log.Error("banned from the room; no longer bridging it", "reason", p.reason())
	case p.has(statusNickChanged):
		if p.X != nil && len(p.X.Items) > 0 && p.X.Items[0].Nick != "" {
			r.nick = p.X.Items[0].Nick
			r.occupant, _ = r.cfg.JID.WithResource(r.nick)
			r.state = roomJoined
		}
	case p.has(statusKicked), p.has(statusTechnicalKick), p.has(statusShutdown), p.has(statusAffiliation), p.has(statusMembersOnly):
		r.log.Warn("removed from the room; rejoining after a pause", "reason", p.reason(), "in", r.scheduleRejoin())
	default:
		r.log.Warn("left the room unexpectedly; rejoining after a pause", "in", r.scheduleRejoin())
	}
}

func (r *room) onJoinError(p *inPresence) step {
	cond := stanza.Condition("")
	if p.Error != nil {
		cond = p.Error.Condition
	}
	switch cond {
	case stanza.Conflict:
		r.conflicts++
		if r.conflicts > 5 {
			r.state = roomGone
			r.log.Error("nick taken, and so are its variants; not bridging the room", "nick", r.cfg.Nick)
			return stepNone
		}
		r.nick = r.cfg.Nick + strconv.Itoa(r.conflicts+1)
		r.log.Warn("nick taken in the room; trying another", "nick", r.nick)
		return stepJoin
	case stanza.Forbidden, stanza.NotAuthorized, stanza.RegistrationRequired, stanza.NotAllowed:
		r.state = roomGone
		r.log.Error("the room refuses us; not bridging it", "reason", string(cond))
	default:
		r.log.Warn("could not join the room; trying again later", "reason", string(cond), "in", r.scheduleRejoin())
	}
	return stepNone
}

// scheduleRejoin sets when to try the room again: after rejoinDelay,
// doubled for each removal that did not let us stay a minute, up to
// backoffMax, so a room that keeps removing us is not hammered.
func (r *room) scheduleRejoin() time.Duration {
	if !r.joinedAt.IsZero() && time.Since(r.joinedAt) > time.Minute {
		r.removals = 0
	}
	d := min(r.rejoinDelay<<min(r.removals, 10), r.backoffMax)
	r.removals++
	r.state, r.rejoinAt = roomWaiting, time.Now().Add(d)
	return d
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
