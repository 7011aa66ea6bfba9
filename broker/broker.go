// Package broker runs the embedded MQTT broker (mochi-mqtt) or connects to an
// external one (paho), and offers both behind the same small publish and
// subscribe surface. It knows nothing about Meshtastic.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Handler receives one message. On the embedded broker it runs on the
// publisher's goroutine, so it must hand the message off and return quickly.
// The payload must not be kept after the handler returns.
type Handler = func(topic string, payload []byte)

// Off disables the embedded broker's TCP listener.
const Off = "off"

// Config configures the embedded broker.
type Config struct {
	// Listen is the TCP address of the listener, or Off.
	Listen string
	// CredentialsFile holds the broker's users, their passwords and the
	// topics each may read and write (see LoadCredentials). Without it only
	// loopback listeners are allowed; they admit anyone, to read every
	// topic and to write only the downlink.
	CredentialsFile string
	// IsDownlink tells the documented downlink topic, the one topic local
	// tools may write by default. Nil allows none.
	IsDownlink TopicClass
	// IsOwn tells the bridge's own topics, which only the in-process
	// client writes (and a user whose write rules name them).
	IsOwn TopicClass
	// MaxConnections caps the sockets open on the listener, connected or
	// not; 0 means DefaultMaxConnections.
	MaxConnections int
	// ConnectTimeout is how long a new socket may take to send its MQTT
	// CONNECT before it is closed; 0 means DefaultConnectTimeout.
	ConnectTimeout time.Duration
}

// MaxPacketSize bounds one MQTT packet on the embedded broker: far above
// any Meshtastic message (a ServiceEnvelope is under 600 bytes), far below
// what would hurt a small board's memory.
const MaxPacketSize = 64 << 10

// Defaults for the listener's guards: enough for every tool on a LAN, far
// below what a Raspberry Pi's memory and file descriptors allow.
const (
	DefaultMaxConnections = 256
	DefaultConnectTimeout = 5 * time.Second
)

// ErrNoCredentials is returned by Validate for a listener reachable beyond
// this machine without a credentials file.
var ErrNoCredentials = errors.New("reachable beyond this machine but no credentials file is set: anyone on the network could publish to the mesh")

// Validate checks the configuration without touching the network.
func (c Config) Validate() error {
	if c.Listen == "" || c.Listen == Off {
		return nil
	}
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("mqtt listen address %q: %w", c.Listen, err)
	}
	// Port 0 picks a free port (tests); anything else must be a real one.
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("mqtt listen address %q: port %q: want a number from 1 to 65535", c.Listen, port)
	}
	if c.CredentialsFile == "" && !isLoopback(host) {
		return fmt.Errorf("mqtt listen address %q: %w; set a credentials file or listen on 127.0.0.1", c.Listen, ErrNoCredentials)
	}
	if c.MaxConnections < 0 {
		return fmt.Errorf("maximum connections %d: want 0 (the default) or more", c.MaxConnections)
	}
	if c.ConnectTimeout < 0 {
		return fmt.Errorf("connect timeout %v: want 0 (the default) or more", c.ConnectTimeout)
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Embedded is the in-process broker. Gateways use its inline client, which
// alone may write the bridge's own topics.
type Embedded struct {
	srv  *mqtt.Server
	tcp  *guardedListener
	log  *slog.Logger
	mu   sync.Mutex
	next int // next inline subscription id
}

// NewEmbedded builds the broker; Start begins serving.
func NewEmbedded(cfg Config, log *slog.Logger) (*Embedded, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log = log.With("component", "mqtt")
	caps := mqtt.NewDefaultServerCapabilities()
	// mochi allocates a packet's announced length before login; unbounded,
	// five bytes from anyone would make it allocate 256 MiB.
	caps.MaximumPacketSize = MaxPacketSize
	srv := mqtt.New(&mqtt.Options{
		Capabilities: caps,
		InlineClient: true,
		// mochi logs every client connect at info; keep that at our debug.
		Logger: slog.New(levelShift{log.Handler()}),
	})
	hook := &accessHook{isDownlink: cfg.IsDownlink, isOwn: cfg.IsOwn, log: log, guard: newLoginGuard()}
	if cfg.CredentialsFile != "" {
		users, err := LoadCredentials(cfg.CredentialsFile)
		if err != nil {
			return nil, &CredentialsError{File: cfg.CredentialsFile, Err: err}
		}
		hook.users = users
	}
	if err := srv.AddHook(hook, nil); err != nil {
		return nil, err
	}
	e := &Embedded{srv: srv, log: log, next: 1}
	if cfg.Listen != "" && cfg.Listen != Off {
		ln, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("mqtt listen %s: %w", cfg.Listen, err)
		}
		maxConns, timeout := cfg.MaxConnections, cfg.ConnectTimeout
		if maxConns == 0 {
			maxConns = DefaultMaxConnections
		}
		if timeout == 0 {
			timeout = DefaultConnectTimeout
		}
		e.tcp = newGuardedListener("tcp", ln, timeout, maxConns, log)
		if err := srv.AddListener(e.tcp); err != nil {
			ln.Close()
			return nil, fmt.Errorf("mqtt listen %s: %w", cfg.Listen, err)
		}
	}
	return e, nil
}

// CredentialsError is a credentials file that cannot be used.
type CredentialsError struct {
	File string
	Err  error
}

func (e *CredentialsError) Error() string {
	return fmt.Sprintf("mqtt credentials file %s: %v", e.File, e.Err)
}

func (e *CredentialsError) Unwrap() error { return e.Err }

// Start begins accepting connections. After it returns, Addr is known.
func (e *Embedded) Start() error {
	if err := e.srv.Serve(); err != nil {
		return fmt.Errorf("mqtt broker: %w", err)
	}
	if e.tcp != nil {
		e.log.Info("mqtt broker listening", "addr", e.Addr())
	}
	return nil
}

// Addr is the listener's address (useful with port 0), or "" with no listener.
func (e *Embedded) Addr() string {
	if e.tcp == nil {
		return ""
	}
	return e.tcp.Address()
}

// Close stops the listener and closes every client's socket, connected or
// not, so shutdown does not wait on what clients do.
func (e *Embedded) Close() error { return e.srv.Close() }

// Publish sends a message through the inline client at QoS 0.
func (e *Embedded) Publish(topic string, payload []byte, retain bool) error {
	return e.srv.Publish(topic, payload, retain, 0)
}

// Subscribe registers an inline subscription. Retained messages that match
// are delivered before Subscribe returns.
func (e *Embedded) Subscribe(filter string, h Handler) (func(), error) {
	e.mu.Lock()
	id := e.next
	e.next++
	e.mu.Unlock()
	err := e.srv.Subscribe(filter, id, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		h(pk.TopicName, pk.Payload)
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe %q: %w", filter, err)
	}
	return func() { _ = e.srv.Unsubscribe(filter, id) }, nil
}

// levelShift lowers mochi's info records to debug; warnings and errors stay.
type levelShift struct{ slog.Handler }

func (h levelShift) Enabled(ctx context.Context, l slog.Level) bool {
	if l == slog.LevelInfo {
		l = slog.LevelDebug
	}
	return h.Handler.Enabled(ctx, l)
}

func (h levelShift) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelInfo {
		r.Level = slog.LevelDebug
	}
	return h.Handler.Handle(ctx, r)
}

func (h levelShift) WithAttrs(a []slog.Attr) slog.Handler { return levelShift{h.Handler.WithAttrs(a)} }
func (h levelShift) WithGroup(n string) slog.Handler      { return levelShift{h.Handler.WithGroup(n)} }
