package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Remote is a connection to an external broker. It reconnects by itself and
// re-establishes its subscriptions after every reconnect.
type Remote struct {
	client paho.Client
	log    *slog.Logger

	mu   sync.Mutex
	subs map[string]Handler
}

// RemoteConfig configures a connection to an external broker.
type RemoteConfig struct {
	// URL is tcp://, ssl://, mqtt:// or mqtts:// with an optional user:password.
	URL string
	// ClientID defaults to "sovereign-bridge-<random>".
	ClientID string
}

// Validate checks the URL without touching the network.
func (c RemoteConfig) Validate() error {
	_, err := parseBrokerURL(c.URL)
	return err
}

func parseBrokerURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("mqtt broker URL: %w", redactURLError(err))
	}
	switch u.Scheme {
	case "tcp", "mqtt", "ssl", "tls", "mqtts", "ws", "wss":
	default:
		return nil, fmt.Errorf("mqtt broker URL %q: scheme must be tcp, mqtt, ssl, mqtts, ws or wss", u.Redacted())
	}
	if u.Host == "" {
		return nil, fmt.Errorf("mqtt broker URL %q: no host", u.Redacted())
	}
	return u, nil
}

// redactURLError replaces a parse error: its text quotes parts of the URL,
// which may hold a password.
func redactURLError(error) error {
	return errors.New("not a valid URL (mqtt://[user:password@]host[:port])")
}

// DialRemote connects to the external broker, waiting at most until ctx ends
// for the first connection.
func DialRemote(ctx context.Context, cfg RemoteConfig, log *slog.Logger) (*Remote, error) {
	u, err := parseBrokerURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	r := &Remote{log: log.With("component", "mqtt", "broker", u.Redacted()), subs: map[string]Handler{}}
	id := cfg.ClientID
	if id == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		id = "sovereign-bridge-" + hex.EncodeToString(b[:])
	}
	server := *u
	server.User = nil
	switch server.Scheme {
	case "mqtt":
		server.Scheme = "tcp"
	case "mqtts":
		server.Scheme = "ssl"
	}
	opts := paho.NewClientOptions().
		AddBroker(server.String()).
		SetClientID(id).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetMaxReconnectInterval(2 * time.Minute).
		// Handlers only queue, so running them in order costs nothing, and
		// order matters: numbered chunks, texts in the order they were said.
		SetOrderMatters(true).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			r.log.Warn("mqtt broker connection lost; reconnecting", "err", err)
		}).
		SetOnConnectHandler(r.resubscribe)
	if u.User != nil {
		opts.SetUsername(u.User.Username())
		if pw, ok := u.User.Password(); ok {
			opts.SetPassword(pw)
		}
	}
	r.client = paho.NewClient(opts)
	tok := r.client.Connect()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return nil, fmt.Errorf("mqtt broker %s: %w", u.Redacted(), err)
		}
	case <-ctx.Done():
		r.client.Disconnect(0)
		return nil, fmt.Errorf("mqtt broker %s: %w", u.Redacted(), ctx.Err())
	}
	r.log.Info("connected to mqtt broker")
	return r, nil
}

// resubscribe restores every subscription after a (re)connect.
func (r *Remote) resubscribe(c paho.Client) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for filter, h := range r.subs {
		c.Subscribe(filter, 1, wrap(h))
	}
}

func wrap(h Handler) paho.MessageHandler {
	return func(_ paho.Client, m paho.Message) { h(m.Topic(), m.Payload()) }
}

// Publish sends at QoS 0 without waiting, like the embedded broker's inline client.
func (r *Remote) Publish(topic string, payload []byte, retain bool) error {
	if !r.client.IsConnectionOpen() {
		return fmt.Errorf("publish %s: not connected to the mqtt broker", topic)
	}
	r.client.Publish(topic, 0, retain, payload)
	return nil
}

// Subscribe subscribes at QoS 1 and keeps the subscription across reconnects.
func (r *Remote) Subscribe(filter string, h Handler) (func(), error) {
	r.mu.Lock()
	r.subs[filter] = h
	r.mu.Unlock()
	tok := r.client.Subscribe(filter, 1, wrap(h))
	if tok.WaitTimeout(10*time.Second) && tok.Error() != nil {
		return nil, fmt.Errorf("subscribe %q: %w", filter, tok.Error())
	}
	return func() {
		r.mu.Lock()
		delete(r.subs, filter)
		r.mu.Unlock()
		r.client.Unsubscribe(filter)
	}, nil
}

// Close disconnects, waiting briefly for queued messages to go out.
func (r *Remote) Close() error {
	r.client.Disconnect(250)
	return nil
}

// IsPrivate reports whether a broker URL names a host on a private,
// loopback or link-local address, where the firmware waives the senders'
// OK-to-MQTT preference.
func IsPrivate(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	ip := net.ParseIP(u.Hostname())
	if ip == nil {
		return u.Hostname() == "localhost"
	}
	cgnat := net.IPNet{IP: net.IPv4(100, 64, 0, 0), Mask: net.CIDRMask(10, 32)}
	return ip.IsPrivate() || ip.IsLoopback() || ip.IsLinkLocalUnicast() || cgnat.Contains(ip)
}
