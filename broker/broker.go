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
	"os"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
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
	// CredentialsFile is a mochi auth ledger (YAML or JSON) with a "users"
	// map of username to password. Without it only loopback listeners are
	// allowed, and they admit anyone.
	CredentialsFile string
}

// ErrNoCredentials is returned by Validate for a listener reachable beyond
// this machine without a credentials file.
var ErrNoCredentials = errors.New("reachable beyond this machine but no credentials file is set: anyone on the network could publish to the mesh")

// Validate checks the configuration without touching the network.
func (c Config) Validate() error {
	if c.Listen == "" || c.Listen == Off {
		return nil
	}
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("mqtt listen address %q: %w", c.Listen, err)
	}
	if c.CredentialsFile == "" && !isLoopback(host) {
		return fmt.Errorf("mqtt listen address %q: %w; set a credentials file or listen on 127.0.0.1", c.Listen, ErrNoCredentials)
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

// Embedded is the in-process broker. Gateways use its inline client.
type Embedded struct {
	srv  *mqtt.Server
	tcp  *listeners.TCP
	log  *slog.Logger
	mu   sync.Mutex
	next int // next inline subscription id
}

// NewEmbedded builds the broker; Start begins serving.
func NewEmbedded(cfg Config, log *slog.Logger) (*Embedded, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	srv := mqtt.New(&mqtt.Options{
		InlineClient: true,
		// mochi logs every client connect at info; keep that at our debug.
		Logger: slog.New(levelShift{log.With("component", "mqtt").Handler()}),
	})
	if cfg.CredentialsFile != "" {
		data, err := os.ReadFile(cfg.CredentialsFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt credentials: %w", err)
		}
		ledger := new(auth.Ledger)
		if err := ledger.Unmarshal(data); err != nil {
			return nil, fmt.Errorf("mqtt credentials %s: %w", cfg.CredentialsFile, err)
		}
		if len(ledger.Users) == 0 && len(ledger.Auth) == 0 {
			return nil, fmt.Errorf("mqtt credentials %s: no users defined", cfg.CredentialsFile)
		}
		if err := srv.AddHook(new(auth.Hook), &auth.Options{Ledger: ledger}); err != nil {
			return nil, err
		}
	} else if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, err
	}
	e := &Embedded{srv: srv, log: log, next: 1}
	if cfg.Listen != "" && cfg.Listen != Off {
		e.tcp = listeners.NewTCP(listeners.Config{ID: "tcp", Address: cfg.Listen})
		if err := srv.AddListener(e.tcp); err != nil {
			return nil, fmt.Errorf("mqtt listen %s: %w", cfg.Listen, err)
		}
	}
	return e, nil
}

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

// Close stops the listener and disconnects clients.
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
