package xmpptest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"mellium.im/sasl"
	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
)

// XML namespaces used by the client.
const (
	nsMUC      = "http://jabber.org/protocol/muc"
	nsMUCUser  = "http://jabber.org/protocol/muc#user"
	nsMUCAdmin = "http://jabber.org/protocol/muc#admin"
	nsMUCOwner = "http://jabber.org/protocol/muc#owner"
	nsPing     = "urn:xmpp:ping"
)

// Message is a groupchat message received by a Client.
type Message struct {
	Room     string // bare room JID
	From     string // occupant JID (room@service/nick)
	Nick     string
	Body     string
	Subject  string // set on subject changes (usually with an empty Body)
	ID       string // the stanza's id attribute
	OriginID string // XEP-0359 origin-id, if any
	StanzaID string // XEP-0359 stanza-id assigned by the room (by == Room), if any
	Delayed  bool   // carries a XEP-0203 delay (history/MAM replay)
	Received time.Time
	// What it says about another message (relations.go): a XEP-0444
	// reaction set (Reactions non-nil) on the room's message ReactsTo; a
	// XEP-0461 reply to the room's message ReplyID by ReplyTo, with the
	// part of Body marked as its XEP-0428 fallback; a XEP-0308 correction
	// of Replaces; whether it asks to be archived (XEP-0334 store).
	ReactsTo      string
	Reactions     []string
	ReplyTo       string
	ReplyID       string
	ReplyFallback string
	Replaces      string
	Stored        bool
}

// Presence is a MUC presence received by a Client.
type Presence struct {
	Room        string // bare room JID
	From        string // occupant JID
	Nick        string
	Type        string // "" (available), "unavailable" or "error"
	Codes       []int  // muc#user status codes (110 self, 307 kicked, ...)
	Role        string
	Affiliation string
	Self        bool   // status 110
	Destroyed   bool   // carries <destroy/>
	Error       string // error condition for Type "error"
	Status      string // the occupant's <status/> text
	Payload     string // the presence's other children, as XML
	Received    time.Time
}

// HasCode reports whether the presence carries the status code.
func (p Presence) HasCode(code int) bool { return slices.Contains(p.Codes, code) }

// Client is a minimal XMPP client for tests: it joins rooms, sends and
// records groupchat messages and MUC presences, and answers pings. It does
// not use muc.HandleClient (which deadlocks Serve on kick).
type Client struct {
	JID jid.JID // full JID bound by the server

	sess *xmpp.Session

	mu       sync.Mutex
	msgs     []Message
	chats    []Chat
	pres     []Presence
	changed  chan struct{} // closed and replaced on every new event
	serveErr error
	done     chan struct{} // closed when Serve returned

	closeOnce sync.Once
}

// Dial connects user@srv.Domain to srv.Addr with STARTTLS (trusting only
// srv's CA), authenticates with SCRAM-SHA-1 or PLAIN, binds a resource and
// starts serving. t.Cleanup closes the client. Failure is fatal.
func Dial(t testing.TB, srv *Server, user, pass string) *Client {
	t.Helper()
	c, err := TryDial(t, srv, user, pass)
	if err != nil {
		t.Fatalf("xmpptest: dial %s@%s via %s: %v", user, srv.Domain, srv.Addr, err)
	}
	return c
}

// TryDial is Dial returning the error instead of failing the test (for
// asserting that a login fails, or for reconnect loops).
func TryDial(t testing.TB, srv *Server, user, pass string) (*Client, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	origin, err := jid.New(user, srv.Domain, "")
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", srv.Addr)
	if err != nil {
		return nil, err
	}
	// Bound the negotiation even if the server is frozen.
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	features := []xmpp.StreamFeature{
		xmpp.StartTLS(srv.TLSConfig()),
		// No -PLUS mechanisms: ejabberd < 24.02 breaks them under TLS 1.3.
		xmpp.SASL("", pass, sasl.ScramSha1, sasl.Plain),
		xmpp.BindResource(),
	}
	sess, err := xmpp.NewSession(ctx, origin.Domain(), origin, conn, 0, xmpp.NewNegotiator(
		func(*xmpp.Session, *xmpp.StreamConfig) xmpp.StreamConfig {
			cfg := xmpp.StreamConfig{Features: features}
			if os.Getenv("XMPPTEST_TRACE") != "" {
				// Raw XML to stderr; shows PLAIN credentials, tests only.
				cfg.TeeIn = traceWriter{user + " <- "}
				cfg.TeeOut = traceWriter{user + " -> "}
			}
			return cfg
		}))
	if err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	c := &Client{
		JID:     sess.LocalAddr(),
		sess:    sess,
		changed: make(chan struct{}),
		done:    make(chan struct{}),
	}
	go func() {
		err := sess.Serve(xmpp.HandlerFunc(c.handle))
		c.mu.Lock()
		c.serveErr = err
		c.notifyLocked()
		c.mu.Unlock()
		close(c.done)
	}()
	t.Cleanup(c.Close)
	return c, nil
}

// Session exposes the underlying mellium session (for sending raw stanzas).
func (c *Client) Session() *xmpp.Session { return c.sess }

// Done is closed when the session ended (server closed the stream, the
// connection broke, or Close was called).
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns what Serve returned, once Done is closed.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.serveErr
}

// Close ends the stream and closes the connection, waiting (bounded) for
// the serve goroutine. It is safe to call more than once.
func (c *Client) Close() {
	c.closeOnce.Do(func() {
		closed := make(chan struct{})
		go func() {
			// Close takes the output lock; don't wait on it forever if a
			// write is stuck against a frozen server.
			_ = c.sess.Close()
			close(closed)
		}()
		select {
		case <-closed:
		case <-time.After(time.Second):
		}
		select {
		case <-c.done:
		case <-time.After(500 * time.Millisecond):
		}
		_ = c.sess.Conn().Close()
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
		}
	})
}

// Messages returns the groupchat messages received so far.
func (c *Client) Messages() []Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.msgs)
}

// WaitMessage waits until a received groupchat message (including ones that
// arrived before the call) satisfies match, and returns the first such
// message. It fails the test after timeout.
func (c *Client) WaitMessage(t testing.TB, timeout time.Duration, match func(Message) bool) Message {
	t.Helper()
	return waitFor(t, c, timeout, "groupchat message", func() []Message { return c.msgs }, match)
}

// WaitPresence is WaitMessage for MUC presences.
func (c *Client) WaitPresence(t testing.TB, timeout time.Duration, match func(Presence) bool) Presence {
	t.Helper()
	return waitFor(t, c, timeout, "MUC presence", func() []Presence { return c.pres }, match)
}

// waitFor waits until an item of list (read under the client's lock)
// satisfies match.
func waitFor[T any](t testing.TB, c *Client, timeout time.Duration, what string, list func() []T, match func(T) bool) T {
	t.Helper()
	var found T
	err := c.wait(timeout, func() bool {
		for _, v := range list() {
			if match(v) {
				found = v
				return true
			}
		}
		return false
	})
	if err != nil {
		c.mu.Lock()
		got := slices.Clone(list())
		c.mu.Unlock()
		t.Fatalf("xmpptest: %s: no matching %s within %v (%v); got %d: %+v", c.JID, what, timeout, err, len(got), got)
	}
	return found
}

// wait calls cond with c.mu held whenever something was received, until it
// returns true, the session ends or timeout passes.
func (c *Client) wait(timeout time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return c.waitCtx(ctx, cond)
}

func (c *Client) waitCtx(ctx context.Context, cond func() bool) error {
	for {
		c.mu.Lock()
		ok := cond()
		ch := c.changed
		c.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-c.done:
			c.mu.Lock()
			ok := cond()
			c.mu.Unlock()
			if ok {
				return nil
			}
			return fmt.Errorf("session ended: %v", c.Err())
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (c *Client) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Join enters room (a bare JID such as "test@conference.localhost") as nick,
// asking for no history, and waits until the room reflects our own presence
// (status 110 or from our occupant JID). Joining a room that does not exist
// creates it, and the creator becomes its owner.
func (c *Client) Join(ctx context.Context, room, nick string) error {
	return c.join(ctx, room, nick, 0)
}

// JoinWithHistory is Join asking for the room's recent history (up to 50
// messages), which arrives marked Delayed.
func (c *Client) JoinWithHistory(ctx context.Context, room, nick string) error {
	return c.join(ctx, room, nick, 50)
}

func (c *Client) join(ctx context.Context, room, nick string, history int) error {
	roomJID, err := jid.Parse(room)
	if err != nil {
		return err
	}
	occupant, err := roomJID.Bare().WithResource(nick)
	if err != nil {
		return err
	}
	c.mu.Lock()
	seen := len(c.pres)
	c.mu.Unlock()

	x := xmlstream.Wrap(
		xmlstream.Wrap(nil, xml.StartElement{
			Name: xml.Name{Local: "history"},
			Attr: []xml.Attr{{Name: xml.Name{Local: "maxstanzas"}, Value: strconv.Itoa(history)}},
		}),
		xml.StartElement{Name: xml.Name{Space: nsMUC, Local: "x"}},
	)
	p := stanza.Presence{ID: randID("join"), To: occupant}
	if err := c.sess.Send(ctx, p.Wrap(x)); err != nil {
		return fmt.Errorf("send join presence: %w", err)
	}
	want := occupant.String()
	var joinErr error
	err = c.waitCtx(ctx, func() bool {
		for _, pr := range c.pres[seen:] {
			if pr.Room != roomJID.Bare().String() {
				continue
			}
			switch {
			case pr.Type == "error" && (pr.From == want || pr.From == pr.Room):
				joinErr = fmt.Errorf("join %s: %s", want, pr.Error)
				return true
			case pr.Type == "" && (pr.Self || pr.From == want):
				return true
			}
		}
		return false
	})
	if err != nil {
		return fmt.Errorf("join %s: %w", want, err)
	}
	return joinErr
}

// Say sends a groupchat message to room with a random id, also used as the
// XEP-0359 origin-id, and returns the id. It does not wait for the
// reflection; use WaitMessage with the id for that.
func (c *Client) Say(ctx context.Context, room, body string) (string, error) {
	id := randID("xt")
	return id, c.SayID(ctx, room, id, body)
}

// SayID is Say with a caller-chosen id (and origin-id).
func (c *Client) SayID(ctx context.Context, room, id, body string) error {
	roomJID, err := jid.Parse(room)
	if err != nil {
		return err
	}
	msg := stanza.Message{ID: id, To: roomJID.Bare(), Type: stanza.GroupChatMessage}
	payload := xmlstream.MultiReader(textElem("body", body), stanza.OriginID{ID: id}.TokenReader())
	return c.sess.Send(ctx, msg.Wrap(payload))
}

// Kick removes nick from room (muc#admin role='none'). Needs moderator
// rights; the client that created the room is its owner and has them.
func (c *Client) Kick(ctx context.Context, room, nick, reason string) error {
	item := xmlstream.Wrap(
		textElem("reason", reason),
		xml.StartElement{Name: xml.Name{Local: "item"}, Attr: []xml.Attr{
			{Name: xml.Name{Local: "nick"}, Value: nick},
			{Name: xml.Name{Local: "role"}, Value: "none"},
		}},
	)
	return c.iqSet(ctx, room, xmlstream.Wrap(item, xml.StartElement{Name: xml.Name{Space: nsMUCAdmin, Local: "query"}}))
}

// Destroy destroys room (muc#owner). Needs the owner affiliation.
func (c *Client) Destroy(ctx context.Context, room, reason string) error {
	destroy := xmlstream.Wrap(textElem("reason", reason), xml.StartElement{Name: xml.Name{Local: "destroy"}})
	return c.iqSet(ctx, room, xmlstream.Wrap(destroy, xml.StartElement{Name: xml.Name{Space: nsMUCOwner, Local: "query"}}))
}

func (c *Client) iqSet(ctx context.Context, to string, payload xml.TokenReader) error {
	toJID, err := jid.Parse(to)
	if err != nil {
		return err
	}
	iq := stanza.IQ{ID: randID("iq"), To: toJID, Type: stanza.SetIQ}
	return c.sess.UnmarshalIQElement(ctx, payload, iq, nil)
}

func textElem(name, text string) xml.TokenReader {
	start := xml.StartElement{Name: xml.Name{Local: name}}
	if text == "" {
		return xmlstream.Wrap(nil, start)
	}
	return xmlstream.Wrap(xmlstream.Token(xml.CharData(text)), start)
}

// Incoming stanza shapes.

type sid struct {
	ID string `xml:"id,attr"`
	By string `xml:"by,attr"`
}

type inMessage struct {
	ID        string        `xml:"id,attr"`
	From      string        `xml:"from,attr"`
	Type      string        `xml:"type,attr"`
	Body      *string       `xml:"body"`
	Subject   *string       `xml:"subject"`
	OriginIDs []sid         `xml:"urn:xmpp:sid:0 origin-id"`
	StanzaIDs []sid         `xml:"urn:xmpp:sid:0 stanza-id"`
	Delay     *struct{}     `xml:"urn:xmpp:delay delay"`
	Error     *stanza.Error `xml:"error"`
	// XEP-0184, in one-to-one chat.
	ReceiptRequest *struct{} `xml:"urn:xmpp:receipts request"`
	Receipt        *sid      `xml:"urn:xmpp:receipts received"`
	relExt
}

type mucItem struct {
	Role        string `xml:"role,attr"`
	Affiliation string `xml:"affiliation,attr"`
}

type mucUserX struct {
	Status []struct {
		Code string `xml:"code,attr"`
	} `xml:"status"`
	Items   []mucItem `xml:"item"`
	Destroy *struct{} `xml:"destroy"`
}

type inPresence struct {
	ID     string        `xml:"id,attr"`
	From   string        `xml:"from,attr"`
	Type   string        `xml:"type,attr"`
	Status string        `xml:"status"`
	X      []mucUserX    `xml:"http://jabber.org/protocol/muc#user x"`
	Error  *stanza.Error `xml:"error"`
	Other  []anyElem     `xml:",any"`
}

// anyElem is an element of any name, kept whole to be shown as XML.
type anyElem struct {
	XMLName  xml.Name
	Attrs    []xml.Attr `xml:",any,attr"`
	Text     string     `xml:",chardata"`
	Children []anyElem  `xml:",any"`
}

// payload renders elements as XML, for a test to look into.
func payload(els []anyElem) string {
	var b strings.Builder
	for _, e := range els {
		out, _ := xml.Marshal(e)
		b.Write(out)
	}
	return b.String()
}

type inIQ struct {
	ID   string    `xml:"id,attr"`
	From string    `xml:"from,attr"`
	Type string    `xml:"type,attr"`
	Ping *struct{} `xml:"urn:xmpp:ping ping"`
}

// handle runs inside Serve: it decodes, records and returns; it never waits
// for a response. It returns nil on bad input so the session survives.
func (c *Client) handle(t xmlstream.TokenReadEncoder, start *xml.StartElement) error {
	// t yields the stanza's children and end element; put the start element
	// back so a fresh decoder sees a balanced element.
	d := xml.NewTokenDecoder(xmlstream.MultiReader(xmlstream.Token(start.Copy()), t))
	now := time.Now()
	switch start.Name.Local {
	case "message":
		var m inMessage
		if err := d.Decode(&m); err != nil {
			return nil
		}
		if m.Type != "groupchat" {
			c.recordChat(m, now)
			return nil
		}
		from, err := jid.Parse(m.From)
		if err != nil {
			return nil
		}
		room := from.Bare().String()
		msg := Message{
			Room:     room,
			From:     m.From,
			Nick:     from.Resourcepart(),
			ID:       m.ID,
			Delayed:  m.Delay != nil,
			Received: now,
		}
		if m.Body != nil {
			msg.Body = *m.Body
		}
		if m.Subject != nil {
			msg.Subject = *m.Subject
		}
		if len(m.OriginIDs) > 0 {
			msg.OriginID = m.OriginIDs[0].ID
		}
		for _, s := range m.StanzaIDs {
			if s.By == room {
				msg.StanzaID = s.ID
			}
		}
		msg.relations(m.relExt)
		c.mu.Lock()
		c.msgs = append(c.msgs, msg)
		c.notifyLocked()
		c.mu.Unlock()
	case "presence":
		var p inPresence
		if err := d.Decode(&p); err != nil {
			return nil
		}
		if len(p.X) == 0 && p.Type != "error" {
			return nil // not MUC
		}
		from, err := jid.Parse(p.From)
		if err != nil {
			return nil
		}
		pr := Presence{
			Room:     from.Bare().String(),
			From:     p.From,
			Nick:     from.Resourcepart(),
			Type:     p.Type,
			Status:   p.Status,
			Payload:  payload(p.Other),
			Received: now,
		}
		for _, x := range p.X {
			for _, s := range x.Status {
				if n, err := strconv.Atoi(s.Code); err == nil {
					pr.Codes = append(pr.Codes, n)
				}
			}
			if len(x.Items) > 0 {
				pr.Role, pr.Affiliation = x.Items[0].Role, x.Items[0].Affiliation
			}
			if x.Destroy != nil {
				pr.Destroyed = true
			}
		}
		pr.Self = pr.HasCode(110)
		if p.Error != nil {
			pr.Error = string(p.Error.Condition)
		}
		c.mu.Lock()
		c.pres = append(c.pres, pr)
		c.notifyLocked()
		c.mu.Unlock()
	case "iq":
		var iq inIQ
		if err := d.Decode(&iq); err != nil {
			return nil
		}
		if iq.Type == "get" && iq.Ping != nil {
			to, _ := jid.Parse(iq.From)
			_, err := xmlstream.Copy(t, stanza.IQ{ID: iq.ID, To: to, Type: stanza.ResultIQ}.Wrap(nil))
			return err
		}
		// Anything else gets Serve's automatic service-unavailable.
	}
	return nil
}

// traceWriter prints raw stream XML to stderr (XMPPTEST_TRACE=1).
type traceWriter struct{ prefix string }

func (w traceWriter) Write(p []byte) (int, error) {
	fmt.Fprintf(os.Stderr, "%s%s\n", w.prefix, p)
	return len(p), nil
}

func randID(prefix string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}
