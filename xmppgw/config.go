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

	"github.com/jshiffer/lora-xmpp-bridge/internal/secret"
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
	Password secret.String
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
	// DMJID receives direct messages sent to the bridge's radio by nodes
	// that no XMPP user wrote to through the bridge; empty means they are
	// logged and not forwarded.
	DMJID jid.JID
	// DMAllow are accounts that may write to mesh nodes through the
	// bridge besides the occupants of the bridged rooms (recognised by
	// the real JID the room shows).
	DMAllow []jid.JID
	// DMAckTimeout is how long a direct message to a node waits for the
	// node's acknowledgement before its sender is told it did not arrive.
	DMAckTimeout time.Duration
	// DMBurst direct messages in a row are taken from one person (or
	// commands from one node), then one every DMInterval: the mesh's
	// airtime is shared.
	DMBurst    int
	DMInterval time.Duration
	// StatusInterval is the least time between two changes of the status
	// in the bridge's room presence.
	StatusInterval time.Duration
	// MaxChunks is the most mesh packets one room message may become.
	MaxChunks int
	// EditWindow is how long after a room message went out over radio a
	// correction of it (XEP-0308) is still sent, once, as
	// "nick (edit): ..."; a correction of a message still queued replaces
	// it in the queue whenever it comes.
	EditWindow time.Duration
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
	// PeerBridges are the XMPP accounts of other bridges this one
	// cooperates with in its rooms: it takes what they say about their
	// radios, and leaves to them the mesh texts and room messages theirs
	// are to carry. The room must show them their real JIDs (a
	// non-anonymous room, or the bridges as moderators).
	PeerBridges []jid.JID
	// PeerGrace is how long to hold a mesh text that another bridge in the
	// room, on the same mesh, is the one to post (if that bridge has not
	// posted it by then, this one does), and a mesh text before it is
	// relayed to the bridge's other meshes (a radio that hears it too in
	// that time shows that mesh is the same).
	PeerGrace  time.Duration
	BackoffMin time.Duration
	BackoffMax time.Duration

	// maxTLS caps the TLS version (0: the newest); tests use it to reach
	// the channel binding Prosody offers only under TLS 1.2.
	maxTLS uint16
}

// ConfigError is a Config field with a value that cannot work. Field is the
// field's name, so that a caller can point at the setting as its user gave
// it (a flag, a key in a file).
type ConfigError struct {
	Field string
	Err   error
}

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

func fieldErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Err: fmt.Errorf(format, args...)}
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
	def(&c.PeerGrace, 5*time.Second)
	def(&c.BackoffMin, time.Second)
	def(&c.BackoffMax, 5*time.Minute)
	def(&c.EditWindow, DefaultEditWindow)
	def(&c.DMAckTimeout, 5*time.Minute)
	def(&c.DMInterval, 30*time.Second)
	def(&c.StatusInterval, time.Minute)
	if c.DMBurst == 0 {
		c.DMBurst = 3
	}
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
		return fieldErr("JID", "XMPP account %q: want user@domain", c.JID.String())
	}
	if c.Password == "" {
		return &ConfigError{Field: "Password", Err: errors.New("no XMPP password")}
	}
	if c.Server != "" {
		if _, _, err := net.SplitHostPort(c.Server); err != nil {
			return fieldErr("Server", "XMPP server %q: want host:port: %w", c.Server, err)
		}
	}
	if c.MaxChunks < 1 {
		return fieldErr("MaxChunks", "at most %d mesh packets per room message: want at least 1", c.MaxChunks)
	}
	if len(c.Rooms) == 0 {
		return &ConfigError{Field: "Rooms", Err: errors.New("no room to join")}
	}
	seen := map[string]bool{}
	for _, r := range c.Rooms {
		if r.Index > 7 {
			return fieldErr("Rooms", "room %s: channel index %d: a radio has channels 0 to 7", r.JID, r.Index)
		}
		if r.JID.Localpart() == "" || r.JID.Resourcepart() != "" {
			return fieldErr("Rooms", "room %q: want a bare room JID such as village@conference.example.org", r.JID.String())
		}
		if r.Nick == "" {
			return fieldErr("Rooms", "room %s: no nick", r.JID)
		}
		key := strings.ToLower(r.label())
		if r.ByIndex && r.Index == 0 {
			key = "primary"
		}
		if seen[key] {
			return fieldErr("Rooms", "channel %s is mapped to two rooms", r.label())
		}
		seen[key] = true
	}
	for _, a := range c.DMAllow {
		if a.Localpart() == "" || a.Resourcepart() != "" {
			return fieldErr("DMAllow", "%q: want an account such as alice@example.org", a.String())
		}
	}
	if c.DMBurst < 1 {
		return fieldErr("DMBurst", "at most %d direct messages in a row: want at least 1", c.DMBurst)
	}
	if !strings.Contains(c.Format, "{text}") {
		return fieldErr("Format", "message format %q has no {text}", c.Format)
	}
	return nil
}
