package xmpptest

import (
	"context"
	"encoding/xml"
	"strconv"
	"testing"
	"time"
	"unicode/utf8"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
)

// Namespaces of message relations, as a modern client (Conversations,
// Dino, Gajim) sends them in a room.
const (
	nsReactions = "urn:xmpp:reactions:0"
	nsReply     = "urn:xmpp:reply:0"
	nsFallback  = "urn:xmpp:fallback:0"
	nsCorrect   = "urn:xmpp:message-correct:0"
	nsRetract   = "urn:xmpp:message-retract:1"
	nsHints     = "urn:xmpp:hints"
)

// relExt is what a received message says about another.
type relExt struct {
	Reactions *struct {
		ID    string   `xml:"id,attr"`
		Items []string `xml:"reaction"`
	} `xml:"urn:xmpp:reactions:0 reactions"`
	Reply *struct {
		To string `xml:"to,attr"`
		ID string `xml:"id,attr"`
	} `xml:"urn:xmpp:reply:0 reply"`
	Fallbacks []struct {
		For    string `xml:"for,attr"`
		Bodies []struct {
			Start string `xml:"start,attr"`
			End   string `xml:"end,attr"`
		} `xml:"body"`
	} `xml:"urn:xmpp:fallback:0 fallback"`
	Replace *struct {
		ID string `xml:"id,attr"`
	} `xml:"urn:xmpp:message-correct:0 replace"`
	Store *struct{} `xml:"urn:xmpp:hints store"`
}

// relations fills in what m says about another message.
func (m *Message) relations(x relExt) {
	if x.Reactions != nil {
		m.ReactsTo, m.Reactions = x.Reactions.ID, x.Reactions.Items
		if m.Reactions == nil {
			m.Reactions = []string{}
		}
	}
	if x.Reply != nil {
		m.ReplyTo, m.ReplyID = x.Reply.To, x.Reply.ID
	}
	if x.Replace != nil {
		m.Replaces = x.Replace.ID
	}
	m.Stored = x.Store != nil
	runes := []rune(m.Body)
	for _, fb := range x.Fallbacks {
		if fb.For != nsReply {
			continue
		}
		for _, b := range fb.Bodies {
			start, err1 := strconv.Atoi(b.Start)
			end, err2 := strconv.Atoi(b.End)
			if err1 == nil && err2 == nil && 0 <= start && start <= end && end <= len(runes) {
				m.ReplyFallback += string(runes[start:end])
			}
		}
	}
}

// WaitReaction waits for a XEP-0444 reaction message on the message the
// room knows as stanzaID, whose set includes emoji.
func (c *Client) WaitReaction(t testing.TB, timeout time.Duration, stanzaID, emoji string) Message {
	t.Helper()
	return c.WaitMessage(t, timeout, func(m Message) bool {
		if m.ReactsTo != stanzaID {
			return false
		}
		for _, r := range m.Reactions {
			if r == emoji {
				return true
			}
		}
		return false
	})
}

// React sends a XEP-0444 reaction: the whole set of reactions of this
// client on the room's message stanzaID (an empty set takes them back).
// It returns the message's id, also its origin-id.
func (c *Client) React(ctx context.Context, room, stanzaID string, emojis ...string) (string, error) {
	var items []xml.TokenReader
	for _, e := range emojis {
		items = append(items, textElem("reaction", e))
	}
	reactions := xmlstream.Wrap(xmlstream.MultiReader(items...), xml.StartElement{
		Name: xml.Name{Space: nsReactions, Local: "reactions"}, Attr: []xml.Attr{{Name: xml.Name{Local: "id"}, Value: stanzaID}},
	})
	return c.sendRelated(ctx, room, "react", reactions, storeHint())
}

// Reply sends a XEP-0461 reply to the room's message stanzaID, said by
// the occupant author, quoting quoted in a XEP-0428 fallback before body
// as Conversations and Dino do. It returns the message's id.
func (c *Client) Reply(ctx context.Context, room, author, stanzaID, quoted, body string) (string, error) {
	quote := "> " + quoted + "\n"
	reply := xmlstream.Wrap(nil, xml.StartElement{Name: xml.Name{Space: nsReply, Local: "reply"}, Attr: []xml.Attr{
		{Name: xml.Name{Local: "to"}, Value: author}, {Name: xml.Name{Local: "id"}, Value: stanzaID},
	}})
	fallback := fallbackFor(nsReply, 0, utf8.RuneCountInString(quote))
	return c.sendRelated(ctx, room, "reply", textElem("body", quote+body), reply, fallback)
}

// Correct sends a XEP-0308 correction of this client's message id (its
// origin-id) with the new body. It returns the correction's own id.
func (c *Client) Correct(ctx context.Context, room, id, body string) (string, error) {
	replace := xmlstream.Wrap(nil, xml.StartElement{Name: xml.Name{Space: nsCorrect, Local: "replace"}, Attr: []xml.Attr{{Name: xml.Name{Local: "id"}, Value: id}}})
	return c.sendRelated(ctx, room, "fix", textElem("body", body), replace)
}

// Retract sends a XEP-0424 retraction of the room's message stanzaID, with
// the fallback body and store hint clients add for those without it.
func (c *Client) Retract(ctx context.Context, room, stanzaID string) (string, error) {
	retract := xmlstream.Wrap(nil, xml.StartElement{Name: xml.Name{Space: nsRetract, Local: "retract"}, Attr: []xml.Attr{{Name: xml.Name{Local: "id"}, Value: stanzaID}}})
	fallback := xmlstream.Wrap(nil, xml.StartElement{Name: xml.Name{Space: nsFallback, Local: "fallback"}, Attr: []xml.Attr{{Name: xml.Name{Local: "for"}, Value: nsRetract}}})
	body := textElem("body", "This person attempted to retract a previous message, but it's unsupported by your client.")
	return c.sendRelated(ctx, room, "retract", body, retract, fallback, storeHint())
}

func storeHint() xml.TokenReader {
	return xmlstream.Wrap(nil, xml.StartElement{Name: xml.Name{Space: nsHints, Local: "store"}})
}

func fallbackFor(ns string, start, end int) xml.TokenReader {
	body := xmlstream.Wrap(nil, xml.StartElement{Name: xml.Name{Local: "body"}, Attr: []xml.Attr{
		{Name: xml.Name{Local: "start"}, Value: strconv.Itoa(start)}, {Name: xml.Name{Local: "end"}, Value: strconv.Itoa(end)},
	}})
	return xmlstream.Wrap(body, xml.StartElement{Name: xml.Name{Space: nsFallback, Local: "fallback"}, Attr: []xml.Attr{{Name: xml.Name{Local: "for"}, Value: ns}}})
}

// sendRelated sends a groupchat message made of parts, with a random id
// that is also its origin-id, and returns the id.
func (c *Client) sendRelated(ctx context.Context, room, prefix string, parts ...xml.TokenReader) (string, error) {
	roomJID, err := jid.Parse(room)
	if err != nil {
		return "", err
	}
	id := randID(prefix)
	msg := stanza.Message{ID: id, To: roomJID.Bare(), Type: stanza.GroupChatMessage}
	parts = append(parts, stanza.OriginID{ID: id}.TokenReader())
	return id, c.sess.Send(ctx, msg.Wrap(xmlstream.MultiReader(parts...)))
}
