// Package xmppgw is the XMPP gateway: an XMPP client that joins multi-user
// chats and bridges each with a mesh channel, meeting the radio link only
// through the broker. Mesh texts heard on sovereign/mesh/rx become room
// messages; room messages become send requests on sovereign/mesh/tx, split
// into mesh-sized chunks; the outcomes on sovereign/mesh/result that are
// failures come back to the room.
package xmppgw

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"mellium.im/xmpp/jid"
)

// Room maps one mesh channel to one multi-user chat.
type Room struct {
	// JID is the room's bare JID, e.g. village@conference.example.org.
	JID jid.JID
	// Nick is the bridge's nick in the room.
	Nick string
	// Channel is the mesh channel's name ("" for the primary channel).
	Channel string
	// ByIndex names the channel by Index (0-7) instead of by name.
	ByIndex bool
	Index   uint32
}

// matches reports whether a packet on the named, indexed channel belongs to r.
func (r Room) matches(name string, index uint32) bool {
	if r.ByIndex {
		return r.Index == index
	}
	if r.Channel == "" {
		return index == 0
	}
	return strings.EqualFold(r.Channel, name)
}

func (r Room) label() string {
	switch {
	case r.ByIndex:
		return fmt.Sprintf("#%d", r.Index)
	case r.Channel == "":
		return "primary"
	}
	return r.Channel
}

// Config configures the XMPP gateway.
type Config struct {
	JID      jid.JID
	Password string // never logged
	// Server is host:port to dial instead of looking up SRV records.
	Server string
	// RootCAs verifies the server; nil uses the system roots (and
	// SSL_CERT_FILE).
	RootCAs *x509.CertPool
	// ChannelBinding offers SCRAM-*-PLUS first. Off by default: servers
	// that bind tls-unique under TLS 1.3 (ejabberd before 24.02) refuse
	// every PLUS login.
	ChannelBinding bool
	Rooms          []Room

	// Format renders a mesh text for the room. Placeholders: {name} (long
	// name, else short name, else node id), {long}, {short}, {id}, {text},
	// {channel}.
	Format string
	// DMJID receives direct messages sent to the bridge's radio; empty
	// means they are logged and not forwarded.
	DMJID jid.JID
	// MaxChunks is the most mesh packets one room message may become.
	MaxChunks int
	// Spool keeps what waits for a room and what was already bridged across
	// restarts; nil keeps it in memory only.
	Spool Spool

	PingInterval     time.Duration // XEP-0199 ping to the server
	PingTimeout      time.Duration
	SelfPingInterval time.Duration // XEP-0410 self-ping in each room
	RejoinDelay      time.Duration // after a kick
	// ResendGrace is how long to wait, after a reconnect, for the old
	// connection's last messages to reach the room's archive before
	// resending what was not confirmed.
	ResendGrace time.Duration
	BackoffMin  time.Duration
	BackoffMax  time.Duration
}

// DefaultFormat is how mesh texts appear in the room.
const DefaultFormat = "{name}: {text}"

// Defaults fills in what is unset.
func (c *Config) Defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.PingInterval, 60*time.Second)
	def(&c.PingTimeout, 20*time.Second)
	def(&c.SelfPingInterval, 5*time.Minute)
	def(&c.RejoinDelay, 10*time.Second)
	def(&c.ResendGrace, 5*time.Second)
	def(&c.BackoffMin, time.Second)
	def(&c.BackoffMax, 5*time.Minute)
	if c.Format == "" {
		c.Format = DefaultFormat
	}
	if c.MaxChunks == 0 {
		c.MaxChunks = 4
	}
}

// Validate checks the configuration without touching the network.
func (c Config) Validate() error {
	if c.JID.Localpart() == "" || c.JID.Domainpart() == "" {
		return fmt.Errorf("XMPP account %q: want user@domain", c.JID.String())
	}
	if c.Password == "" {
		return errors.New("no XMPP password: give --password-file (or -p)")
	}
	if c.Server != "" {
		if _, _, err := net.SplitHostPort(c.Server); err != nil {
			return fmt.Errorf("--xmpp-server %q: want host:port", c.Server)
		}
	}
	if len(c.Rooms) == 0 {
		return errors.New("no room to join: give -r room@conference.example.org")
	}
	seen := map[string]bool{}
	for _, r := range c.Rooms {
		if r.Index > 7 {
			return fmt.Errorf("room %s: channel index %d: a radio has channels 0 to 7", r.JID, r.Index)
		}
		if r.JID.Localpart() == "" || r.JID.Resourcepart() != "" {
			return fmt.Errorf("room %q: want a bare room JID such as village@conference.example.org", r.JID.String())
		}
		if r.Nick == "" {
			return fmt.Errorf("room %s: no nick", r.JID)
		}
		key := strings.ToLower(r.label())
		if r.ByIndex && r.Index == 0 {
			key = "primary"
		}
		if seen[key] {
			return fmt.Errorf("channel %s is mapped to two rooms", r.label())
		}
		seen[key] = true
	}
	if !strings.Contains(c.Format, "{text}") {
		return fmt.Errorf("message format %q has no {text}", c.Format)
	}
	return nil
}
