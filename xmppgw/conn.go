package xmppgw

import (
	"context"
	"crypto/tls"
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"mellium.im/sasl"
	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/dial"
	"mellium.im/xmpp/history"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/mux"
	"mellium.im/xmpp/ping"
	"mellium.im/xmpp/stanza"
)

// ErrAuth means the server refused our credentials: retrying cannot help.
var ErrAuth = errors.New("XMPP server refused the account's credentials")

// conn is one XMPP connection and every goroutine that works on it: the one
// serving the stream, the keepalive ping and the rooms' self-pings. They all
// run under the conn's context, and close waits for them, so none of them
// outlives the connection or touches the next one.
type conn struct {
	s         *xmpp.Session
	mechanism string // the SASL mechanism the login used
	arch      *archive

	// events carries what the stanza handlers and the self-pings found,
	// for the session loop.
	events chan event
	// lost receives why the connection ended (the stream closed, or the
	// server stopped answering pings); the first reason wins.
	lost chan error

	ctx         context.Context // ends when close begins
	cancel      context.CancelFunc
	wg          sync.WaitGroup
	pinging     atomic.Bool
	server      jid.JID
	pingTimeout time.Duration
}

// event is what a connection hands to the session loop.
type event struct {
	msg  *inMessage
	pres *inPresence
	// lost is the occupant JID a self-ping says the room no longer knows.
	lost *jid.JID
}

// openConn connects, logs in and starts serving the stream. The caller
// must close the returned conn.
func openConn(ctx context.Context, cfg *Config) (*conn, error) {
	s, mech, err := connect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	c := &conn{
		s: s, mechanism: mech, arch: &archive{},
		events: make(chan event, 256), lost: make(chan error, 1),
		server: cfg.JID.Domain(), pingTimeout: cfg.PingTimeout,
	}
	c.ctx, c.cancel = context.WithCancel(ctx)
	m := mux.New(stanza.NSClient,
		ping.Handle(),
		mux.MessageFunc(stanza.NormalMessage, xml.Name{Space: history.NS, Local: "result"}, c.arch.handle),
		mux.MessageFunc(stanza.GroupChatMessage, xml.Name{Local: "body"}, c.onMessage),
		// Reactions, and retractions without a fallback body, have no body.
		mux.MessageFunc(stanza.GroupChatMessage, xml.Name{Space: nsReactions, Local: "reactions"}, c.onBodyless),
		mux.MessageFunc(stanza.GroupChatMessage, xml.Name{Space: nsRetract, Local: "retract"}, c.onBodyless),
		mux.MessageFunc(stanza.ChatMessage, xml.Name{Local: "body"}, c.onMessage),
		mux.MessageFunc(stanza.ErrorMessage, xml.Name{Local: "error"}, c.onMessage),
		mux.PresenceFunc(stanza.AvailablePresence, xml.Name{Space: nsMUCUser, Local: "x"}, c.onPresence),
		mux.PresenceFunc(stanza.UnavailablePresence, xml.Name{Space: nsMUCUser, Local: "x"}, c.onPresence),
		mux.PresenceFunc(stanza.ErrorPresence, xml.Name{Local: "error"}, c.onPresence),
	)
	c.wg.Go(func() { c.serve(m) })
	return c, nil
}

func (c *conn) serve(h xmpp.Handler) {
	err := c.s.Serve(h)
	if err == nil {
		err = errors.New("server closed the stream")
	}
	c.fail(fmt.Errorf("XMPP stream ended: %w", err))
}

func (c *conn) fail(err error) {
	select {
	case c.lost <- err:
	default:
	}
}

// push hands an event to the session loop, or drops it once the
// connection is closing.
func (c *conn) push(e event) {
	select {
	case c.events <- e:
	case <-c.ctx.Done():
	}
}

// The handlers run inside Serve: they decode and hand off, never wait.

func (c *conn) onMessage(_ stanza.Message, t xmlstream.TokenReadEncoder) error {
	var m inMessage
	if err := xml.NewTokenDecoder(t).Decode(&m); err != nil {
		return nil
	}
	m.received = time.Now()
	c.push(event{msg: &m})
	return nil
}

// onBodyless hands over a message without a body; one with a body is the
// body handler's (the mux calls a handler per child element).
func (c *conn) onBodyless(_ stanza.Message, t xmlstream.TokenReadEncoder) error {
	var m inMessage
	if err := xml.NewTokenDecoder(t).Decode(&m); err != nil || len(m.Bodies) > 0 {
		return nil
	}
	m.received = time.Now()
	c.push(event{msg: &m})
	return nil
}

func (c *conn) onPresence(_ stanza.Presence, t xmlstream.TokenReadEncoder) error {
	var p inPresence
	if err := xml.NewTokenDecoder(t).Decode(&p); err != nil {
		return nil
	}
	c.push(event{pres: &p})
	return nil
}

// keepalive pings the server unless a ping is already out, and reports
// whether it sent one. A missing answer means the link is dead, even if
// writes still succeed into the kernel's buffer.
func (c *conn) keepalive() bool {
	if !c.pinging.CompareAndSwap(false, true) {
		return false
	}
	c.wg.Go(func() {
		defer c.pinging.Store(false)
		ctx, release := callCtx(c.ctx, c.pingTimeout)
		err := ping.Send(ctx, c.s, c.server)
		release()
		if err != nil && c.ctx.Err() == nil {
			c.fail(fmt.Errorf("XMPP server did not answer a ping within %v: %w", c.pingTimeout, err))
			// Closing the socket also frees a session loop stuck in a write.
			_ = c.s.Conn().Close()
		}
	})
	return true
}

// selfPing checks that a room still counts occupant in (XEP-0410): a room
// that silently dropped us answers not-acceptable or item-not-found, and
// the session loop hears of it. Other errors and timeouts are the server
// keepalive's call.
func (c *conn) selfPing(occupant jid.JID) {
	c.wg.Go(func() {
		ctx, release := callCtx(c.ctx, c.pingTimeout)
		err := ping.Send(ctx, c.s, occupant)
		release()
		var se stanza.Error
		if errors.As(err, &se) && (se.Condition == stanza.NotAcceptable || se.Condition == stanza.ItemNotFound) {
			c.push(event{lost: &occupant})
		}
	})
}

// send writes one stanza, bounded in time: a peer that stops reading must
// not wedge the session loop.
func (c *conn) send(ctx context.Context, v any) error {
	ctx, release := callCtx(ctx, 15*time.Second)
	defer release()
	return c.s.Encode(ctx, v)
}

// close ends the connection and waits for everything it started.
func (c *conn) close() {
	c.cancel()
	// Say goodbye if the stream still takes writes, then close the socket,
	// which ends Serve. (SetCloseDeadline would race with Serve.)
	_ = c.s.Conn().SetWriteDeadline(time.Now().Add(2 * time.Second))
	_ = c.s.Close()
	_ = c.s.Conn().Close()
	c.wg.Wait()
}

// connect dials the server, secures the stream with TLS, authenticates and
// binds a resource, and returns the session and the SASL mechanism used.
// Authentication is only ever attempted over TLS: the SASL feature requires
// a secure stream, so a server without TLS fails here.
func connect(ctx context.Context, cfg *Config) (*xmpp.Session, string, error) {
	ctx, release := callCtx(ctx, 45*time.Second)
	defer release()
	domain := cfg.JID.Domain()
	var nc net.Conn
	var err error
	if cfg.Server != "" {
		d := net.Dialer{KeepAlive: 30 * time.Second}
		nc, err = d.DialContext(ctx, "tcp", cfg.Server)
	} else {
		d := dial.Dialer{TLSConfig: tlsConfig(cfg)}
		d.KeepAlive = 30 * time.Second
		nc, err = d.Dial(ctx, "tcp", cfg.JID)
	}
	if err != nil {
		return nil, "", fmt.Errorf("connect to XMPP server: %w", err)
	}
	// SCRAM without channel binding unless asked for: -PLUS variants break
	// against servers that bind tls-unique under TLS 1.3. PLAIN only ever
	// runs inside TLS.
	mechs := []sasl.Mechanism{sasl.ScramSha256, sasl.ScramSha1, sasl.Plain}
	if cfg.ChannelBinding {
		mechs = append([]sasl.Mechanism{sasl.ScramSha256Plus, sasl.ScramSha1Plus}, mechs...)
	}
	// mellium does not say which mechanism it picked; only the picked one
	// is started, so the wrapper records it.
	var used string
	for i, m := range mechs {
		start := m.Start
		mechs[i].Start = func(n *sasl.Negotiator) (bool, []byte, any, error) {
			used = m.Name
			return start(n)
		}
	}
	features := []xmpp.StreamFeature{
		xmpp.StartTLS(tlsConfig(cfg)),
		xmpp.SASL("", cfg.Password.Reveal(), mechs...),
		xmpp.BindResource(),
	}
	s, err := xmpp.NewSession(ctx, domain, cfg.JID.Bare(), nc, 0, xmpp.NewNegotiator(func(*xmpp.Session, *xmpp.StreamConfig) xmpp.StreamConfig {
		return xmpp.StreamConfig{Features: features}
	}))
	if err != nil {
		nc.Close()
		if isPermanentAuthError(err) {
			return nil, "", fmt.Errorf("%w: %w", ErrAuth, err)
		}
		return nil, "", fmt.Errorf("XMPP session: %w", err)
	}
	return s, used, nil
}

func tlsConfig(cfg *Config) *tls.Config {
	return &tls.Config{ServerName: cfg.JID.Domain().String(), RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12, MaxVersion: cfg.maxTLS}
}

// isPermanentAuthError recognises a SASL failure that retrying cannot fix:
// wrong credentials, a disabled account, expired credentials. Temporary
// failures (temporary-auth-failure, aborted, ...) are retried like network
// errors. mellium reports SASL failures with a type from an internal
// package, so it is matched by package path and its condition read by name.
func isPermanentAuthError(err error) bool {
	for e := err; e != nil; e = errors.Unwrap(e) {
		v := reflect.ValueOf(e)
		for v.Kind() == reflect.Pointer && !v.IsNil() {
			v = v.Elem()
		}
		if v.Kind() != reflect.Struct || !strings.HasSuffix(v.Type().PkgPath(), "/internal/saslerr") {
			continue
		}
		cond := v.FieldByName("Condition")
		if !cond.IsValid() {
			return false
		}
		s, ok := cond.Interface().(fmt.Stringer)
		if !ok {
			return false
		}
		switch s.String() {
		case "not-authorized", "account-disabled", "credentials-expired", "invalid-authzid":
			return true
		}
		return false
	}
	return false
}
