package xmppgw

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"time"

	"mellium.im/sasl"
	"mellium.im/xmpp"
	"mellium.im/xmpp/dial"
)

// ErrAuth means the server refused our credentials: retrying cannot help.
var ErrAuth = errors.New("XMPP server refused the account's credentials")

// connect dials the server, secures the stream with TLS, authenticates and
// binds a resource. Authentication is only ever attempted over TLS: the
// SASL feature requires a secure stream, so a server without TLS fails here.
func (g *Gateway) connect(ctx context.Context) (*xmpp.Session, error) {
	ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	domain := g.cfg.JID.Domain()
	var conn net.Conn
	var err error
	if g.cfg.Server != "" {
		d := net.Dialer{KeepAlive: 30 * time.Second}
		conn, err = d.DialContext(ctx, "tcp", g.cfg.Server)
	} else {
		d := dial.Dialer{TLSConfig: g.tlsConfig()}
		d.KeepAlive = 30 * time.Second
		conn, err = d.Dial(ctx, "tcp", g.cfg.JID)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to XMPP server: %w", err)
	}
	// SCRAM without channel binding unless asked for: -PLUS variants break
	// against servers that bind tls-unique under TLS 1.3. PLAIN only ever
	// runs inside TLS.
	mechs := []sasl.Mechanism{sasl.ScramSha256, sasl.ScramSha1, sasl.Plain}
	if g.cfg.ChannelBinding {
		mechs = append([]sasl.Mechanism{sasl.ScramSha256Plus, sasl.ScramSha1Plus}, mechs...)
	}
	features := []xmpp.StreamFeature{
		xmpp.StartTLS(g.tlsConfig()),
		xmpp.SASL("", g.cfg.Password, mechs...),
		xmpp.BindResource(),
	}
	s, err := xmpp.NewSession(ctx, domain, g.cfg.JID.Bare(), conn, 0, xmpp.NewNegotiator(func(*xmpp.Session, *xmpp.StreamConfig) xmpp.StreamConfig {
		return xmpp.StreamConfig{Features: features}
	}))
	if err != nil {
		conn.Close()
		if isPermanentAuthError(err) {
			return nil, fmt.Errorf("%w: %v", ErrAuth, err)
		}
		return nil, fmt.Errorf("XMPP session: %w", err)
	}
	return s, nil
}

func (g *Gateway) tlsConfig() *tls.Config {
	return &tls.Config{ServerName: g.cfg.JID.Domain().String(), RootCAs: g.cfg.RootCAs, MinVersion: tls.VersionTLS12}
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
