package xmpptest

import (
	"context"
	"encoding/xml"
	"slices"
	"testing"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
)

const nsReceipts = "urn:xmpp:receipts"

// Chat is a message other than groupchat received by a Client: one-to-one
// chat, a XEP-0184 receipt, or an error bounce.
type Chat struct {
	From             string // full or bare JID of the sender
	Type             string // "chat", "normal" (""), "error"
	ID               string
	Body             string
	ReceiptRequested bool   // carries <request xmlns='urn:xmpp:receipts'/>
	ReceiptFor       string // a receipt: the id of the message it confirms
	Error            string // the error condition of a bounce
	Received         time.Time
}

// recordChat keeps a message that is not groupchat.
func (c *Client) recordChat(m inMessage, now time.Time) {
	ch := Chat{From: m.From, Type: m.Type, ID: m.ID, ReceiptRequested: m.ReceiptRequest != nil, Received: now}
	if m.Body != nil {
		ch.Body = *m.Body
	}
	if m.Receipt != nil {
		ch.ReceiptFor = m.Receipt.ID
	}
	if m.Error != nil {
		ch.Error = string(m.Error.Condition)
	}
	if ch.Body == "" && ch.ReceiptFor == "" && ch.Error == "" {
		return // chat states and the like
	}
	c.mu.Lock()
	c.chats = append(c.chats, ch)
	c.notifyLocked()
	c.mu.Unlock()
}

// Presences returns the MUC presences received so far.
func (c *Client) Presences() []Presence {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.pres)
}

// Chats returns the messages other than groupchat received so far.
func (c *Client) Chats() []Chat {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.chats)
}

// WaitChat waits until a received message other than groupchat
// (including ones that arrived before the call) satisfies match, and
// returns the first such. It fails the test after timeout.
func (c *Client) WaitChat(t testing.TB, timeout time.Duration, match func(Chat) bool) Chat {
	t.Helper()
	return waitFor(t, c, timeout, "one-to-one message", func() []Chat { return c.chats }, match)
}

// WaitReceipt waits for the XEP-0184 receipt of the message id.
func (c *Client) WaitReceipt(t testing.TB, timeout time.Duration, id string) Chat {
	t.Helper()
	return c.WaitChat(t, timeout, func(m Chat) bool { return m.ReceiptFor == id })
}

// SendChat sends a one-to-one chat message to to with a random id, asking
// for a XEP-0184 receipt when receipt is set, as Conversations or Dino do,
// and returns the id.
func (c *Client) SendChat(ctx context.Context, to, body string, receipt bool) (string, error) {
	toJID, err := jid.Parse(to)
	if err != nil {
		return "", err
	}
	id := randID("chat")
	msg := stanza.Message{ID: id, To: toJID, Type: stanza.ChatMessage}
	parts := []xml.TokenReader{textElem("body", body), stanza.OriginID{ID: id}.TokenReader()}
	if receipt {
		parts = append(parts, xmlstream.Wrap(nil, xml.StartElement{Name: xml.Name{Space: nsReceipts, Local: "request"}}))
	}
	return id, c.sess.Send(ctx, msg.Wrap(xmlstream.MultiReader(parts...)))
}

// Available sends the client's initial presence, as every chat client
// does: messages to its bare JID are then delivered to it.
func (c *Client) Available(ctx context.Context) error {
	return c.sess.Send(ctx, stanza.Presence{ID: randID("pres")}.Wrap(nil))
}
