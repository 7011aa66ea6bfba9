package xmppgw

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"mellium.im/xmpp/jid"

	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
)

// Refusals that come close together are told in one notice: a burst (the
// radio's queue overflowing after an outage, say) would otherwise fill the
// room with the same line, one per message. A batch is told once no
// refusal has joined it for refusalQuiet, or refusalMaxDelay after its
// first, whichever is sooner.
const (
	refusalQuiet    = 2 * time.Second
	refusalMaxDelay = 10 * time.Second
	// Bounds on a notice: the messages named, the authors of the rest, the
	// words quoted from each, and the messages remembered per batch.
	refusalListed  = 5
	refusalAuthors = 5
	wordsBytes     = 40
	refusalKept    = 100
)

// refusedMsg is a room message the mesh did not take (all or part of).
type refusedMsg struct {
	nick, words string
	key         string
	parts       int
	refused     []int // the parts refused, 1-based
	reason      meshpb.Routing_Error
}

// refusalBatch gathers one room's refusals until they are told.
type refusalBatch struct {
	room        jid.JID
	first, last time.Time
	msgs        []*refusedMsg // the first refusalKept messages
	count       int           // messages in all
	authors     []string      // of every message, in order of first refusal
}

func (b *refusalBatch) add(info requestInfo, reason meshpb.Routing_Error, now time.Time) {
	b.last = now
	for _, m := range b.msgs {
		if m.key == info.msg {
			m.refused = append(m.refused, info.part)
			return
		}
	}
	b.count++
	if !slices.Contains(b.authors, info.nick) {
		b.authors = append(b.authors, info.nick)
	}
	if len(b.msgs) < refusalKept {
		b.msgs = append(b.msgs, &refusedMsg{nick: info.nick, words: info.words, key: info.msg, parts: info.parts, refused: []int{info.part}, reason: reason})
	}
}

func (b *refusalBatch) due(now time.Time) bool {
	return now.Sub(b.last) >= refusalQuiet || now.Sub(b.first) >= refusalMaxDelay
}

// text is the notice for the batch: who said what, and why the mesh did not
// take it, bounded in length however many messages it covers.
func (b *refusalBatch) text() string {
	sameReason := true
	for _, m := range b.msgs {
		sameReason = sameReason && m.reason == b.msgs[0].reason
	}
	if b.count == 1 {
		m := b.msgs[0]
		return fmt.Sprintf("⚠ %s: your message “%s”%s did not reach the mesh: %s", m.nick, m.words, m.partsNote(), describe(m.reason))
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "⚠ %d messages did not reach the mesh", b.count)
	if sameReason {
		fmt.Fprintf(&sb, ": %s", describe(b.msgs[0].reason))
	}
	sb.WriteString(":")
	listed := b.msgs[:min(len(b.msgs), refusalListed)]
	for _, m := range listed {
		fmt.Fprintf(&sb, "\n• %s: “%s”%s", m.nick, m.words, m.partsNote())
		if !sameReason {
			fmt.Fprintf(&sb, " (%s)", describe(m.reason))
		}
	}
	if rest := b.count - len(listed); rest > 0 {
		var from []string
		for _, m := range b.msgs[len(listed):] {
			if !slices.Contains(from, m.nick) {
				from = append(from, m.nick)
			}
		}
		if b.count > len(b.msgs) {
			// Beyond those remembered, only the authors are known.
			for _, a := range b.authors {
				if !slices.Contains(from, a) {
					from = append(from, a)
				}
			}
		}
		if len(from) > refusalAuthors {
			from = append(from[:refusalAuthors], "…")
		}
		fmt.Fprintf(&sb, "\n• and %d more, from %s", rest, strings.Join(from, ", "))
	}
	return sb.String()
}

// partsNote says which parts of a message in several parts were refused.
func (m *refusedMsg) partsNote() string {
	switch {
	case m.parts <= 1:
		return ""
	case len(m.refused) == 1:
		return fmt.Sprintf(" (part %d/%d)", m.refused[0], m.parts)
	case len(m.refused) == m.parts:
		return fmt.Sprintf(" (all %d parts)", m.parts)
	}
	return fmt.Sprintf(" (%d of %d parts)", len(m.refused), m.parts)
}

// firstWords is the start of a message, to name it in a notice: its first
// words, up to wordsBytes, on one line, cut at a word (or, for a very long
// word, a character) with an ellipsis when there is more.
func firstWords(body string) string {
	words := strings.Fields(body)
	var sb strings.Builder
	for i, w := range words {
		if i > 0 {
			if sb.Len()+1+len(w) > wordsBytes {
				return sb.String() + "…"
			}
			sb.WriteByte(' ')
		}
		if sb.Len()+len(w) > wordsBytes {
			cut := wordsBytes - sb.Len()
			for cut > 0 && !utf8.RuneStart(w[cut]) {
				cut--
			}
			return sb.String() + w[:cut] + "…"
		}
		sb.WriteString(w)
	}
	return sb.String()
}

// tellRefusals queues a notice for each room whose refusals are due.
func (g *Gateway) tellRefusals(now time.Time) {
	g.mu.Lock()
	var due []*refusalBatch
	for room, b := range g.refused {
		if b.due(now) {
			due = append(due, b)
			delete(g.refused, room)
		}
	}
	g.mu.Unlock()
	for _, b := range due {
		g.say(b.room, b.text())
	}
}
