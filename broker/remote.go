package broker

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/mochi-mqtt/server/v2/hooks/auth"

	"github.com/jshiffer/lora-xmpp-bridge/internal/retry"
	"github.com/jshiffer/lora-xmpp-bridge/internal/secret"
	"github.com/jshiffer/lora-xmpp-bridge/internal/spool"
)

// Remote is a connection to an external broker. It connects and reconnects
// by itself, keeps its session (a stable client id, clean session off) so
// the broker holds QoS 1 messages for it while it is away, and restores its
// subscriptions after every reconnect.
//
// The bridge's own messages (those Reliable selects) go through the outbox:
// kept on disk until the broker has acknowledged them at QoS 1, published
// in order, so what the radio hears while the broker is away is published
// once it is back. Every other message (the Meshtastic topics for local
// tools) is published at QoS 0, and while the broker is away a bounded
// queue keeps the newest, as the firmware's MQTT module does.
type Remote struct {
	client   paho.Client
	log      *slog.Logger
	cfg      RemoteConfig
	outbox   Outbox
	wake     chan struct{}
	stop     context.CancelFunc
	done     chan struct{}
	redacted string

	deliverMu sync.Mutex // orders dispatch against Subscribe handing over held messages
	mu        sync.Mutex
	subs      map[string]Handler
	recent    []recentMessage // acknowledged lately, published again after a reconnect
	resend    bool            // a reconnect happened: publish recent again first
	lost      chan struct{}   // closed when the current connection is lost
	lostAt    time.Time       // when the last connection was lost
	everUp    bool            // the first connection has been made
	lossy     []lossyMessage  // Meshtastic topics waiting for a connection
	pending   []lossyMessage  // received for no subscriber yet
	dropped   int             // lossy messages dropped during this outage
	// willTopicState is the last retained message published on the
	// will's topic, restated after each reconnect; willMu orders setting
	// it and queueing it against restating it.
	willMu         sync.Mutex
	willTopicState []byte
}

// Outbox is the durable queue the bridge's own messages wait in; the spool
// is one.
type Outbox interface {
	Push(queue string, data []byte, dedupeKey string) (seq uint64, dup bool, err error)
	Peek(queue string, n int) ([]spool.Item, error)
	Ack(queue string, seqs ...uint64) error
}

// OutboxQueue names the outbox's queue in the spool.
const OutboxQueue = "mqtt-outbox"

// lossyLimit bounds the QoS 0 messages kept while the broker is away.
const lossyLimit = 512

// A broker acknowledges a QoS 1 message before it has forwarded or saved
// it; if it crashes in between, the message is gone although the outbox let
// it go. So what was acknowledged in the last RepublishWindow is published
// again after every reconnect. Receivers drop the copies: mesh packets by
// (from, id), send requests by their request id, records by being
// retained state.
const (
	DefaultRepublishWindow = 30 * time.Second
	republishLimit         = 1024
)

type recentMessage struct {
	item outboxItem
	at   time.Time
}

type lossyMessage struct {
	topic   string
	payload []byte
	retain  bool
}

// outboxItem is a message as the outbox keeps it.
type outboxItem struct {
	Topic   string `json:"t"`
	Payload []byte `json:"p"`
	Retain  bool   `json:"r,omitempty"`
}

// RemoteConfig configures a connection to an external broker.
type RemoteConfig struct {
	// URL is tcp://, ssl://, mqtt:// or mqtts:// with an optional user (and
	// password, though Password keeps it out of the process list).
	URL string
	// Password, if set, replaces the URL's password.
	Password secret.String
	// CAFile is a PEM file of the certificate authorities to trust for
	// ssl:// and mqtts://; empty trusts the system's.
	CAFile string
	// ClientID identifies the session; keep it stable across restarts so
	// the broker keeps what it holds for the bridge. Empty picks a random
	// one (a new session at every start).
	ClientID string
	// Reliable selects the topics published at QoS 1 through the outbox.
	// Nil publishes everything at QoS 0.
	Reliable func(topic string) bool
	// Outbox keeps reliable messages until the broker acknowledges them.
	// Nil keeps them in memory.
	Outbox Outbox
	// AckTimeout is how long a QoS 1 publish or a subscription may wait
	// for the broker's acknowledgement; 0 means 10 s.
	AckTimeout time.Duration
	// RepublishWindow is how far back from a lost connection acknowledged
	// messages are published again; 0 means DefaultRepublishWindow.
	RepublishWindow time.Duration
	// Will, if set, is published by the broker if the connection drops
	// without a goodbye (the daemon killed, the network gone), so that
	// others learn it is away.
	Will *Will
}

// Will is a retained message the broker publishes at QoS 1 for a
// connection that drops. After every reconnect, the last retained message
// published on its topic is published again, over the will the broker
// may have published meanwhile.
type Will struct {
	Topic   string
	Payload []byte
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

// ErrBrokerAuth means the broker refused the credentials: retrying cannot
// help.
var ErrBrokerAuth = errors.New("the mqtt broker refused the user name or password")

// DialRemote starts the connection to the external broker. It tries once,
// waiting at most until ctx ends: a refused login is returned as
// ErrBrokerAuth; a broker that cannot be reached is retried in the
// background while the outbox keeps what is published meanwhile.
func DialRemote(ctx context.Context, cfg RemoteConfig, log *slog.Logger) (*Remote, error) {
	u, err := parseBrokerURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = 10 * time.Second
	}
	if cfg.RepublishWindow == 0 {
		cfg.RepublishWindow = DefaultRepublishWindow
	}
	r := &Remote{
		log: log.With("component", "mqtt", "broker", u.Redacted()), cfg: cfg, redacted: u.Redacted(),
		subs: map[string]Handler{}, wake: make(chan struct{}, 1), done: make(chan struct{}),
		outbox: cfg.Outbox,
	}
	if r.outbox == nil {
		r.outbox = &memOutbox{}
	}
	opts, err := r.options(u)
	if err != nil {
		return nil, err
	}
	r.client = paho.NewClient(opts)

	tok := r.client.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
	}
	if err := tok.Error(); err != nil && isAuthError(err) {
		r.client.Disconnect(0)
		return nil, fmt.Errorf("mqtt broker %s: %w (%v)", u.Redacted(), ErrBrokerAuth, err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	r.stop = stop
	go r.run(runCtx, tok)
	return r, nil
}

func (r *Remote) options(u *url.URL) (*paho.ClientOptions, error) {
	id := r.cfg.ClientID
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
		// The broker keeps the session, subscriptions and QoS 1 messages
		// for the bridge while it is away.
		SetCleanSession(false).
		SetAutoReconnect(true).
		SetConnectRetry(false).
		SetMaxReconnectInterval(time.Minute).
		SetConnectTimeout(10 * time.Second).
		SetWriteTimeout(r.cfg.AckTimeout).
		// Handlers only queue, so running them in order costs nothing, and
		// order matters: numbered chunks, texts in the order they were said.
		SetOrderMatters(true).
		// The outbox, not paho, resends what the broker did not acknowledge,
		// so that nothing overtakes what is published again after a
		// reconnect (paho would resend its in-flight messages first).
		SetStore(nullStore{}).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			r.log.Warn("mqtt broker connection lost; reconnecting", "err", err)
			r.mu.Lock()
			r.lostAt = time.Now()
			if r.lost != nil {
				close(r.lost)
				r.lost = nil
			}
			r.mu.Unlock()
		}).
		SetOnConnectHandler(r.onConnect).
		// Every message comes through dispatch, so that what the broker
		// kept for the session and sends straight after the connect is held
		// until its subscriber is there, not dropped unacknowledged.
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { r.dispatch(m.Topic(), m.Payload()) })
	if u.User != nil {
		opts.SetUsername(u.User.Username())
		if pw, ok := u.User.Password(); ok {
			opts.SetPassword(pw)
		}
	}
	if r.cfg.Password != "" {
		opts.SetPassword(r.cfg.Password.Reveal())
	}
	if w := r.cfg.Will; w != nil {
		opts.SetBinaryWill(w.Topic, w.Payload, 1, true)
	}
	if r.cfg.CAFile != "" {
		pem, err := os.ReadFile(r.cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt broker CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("mqtt broker CA file %s: no PEM certificates in it", r.cfg.CAFile)
		}
		opts.SetTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	}
	return opts, nil
}

// isAuthError tells a refused login (CONNACK 4 or 5) from a broker that
// could not be reached.
func isAuthError(err error) bool {
	return errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) || errors.Is(err, packets.ErrorRefusedNotAuthorised)
}

// run owns the connection: until the first connection it dials with
// backoff (paho's auto-reconnect takes over after that), and whenever the
// connection is open it drains the outbox, then the QoS 0 queue.
func (r *Remote) run(ctx context.Context, first paho.Token) {
	defer close(r.done)
	if first.Error() != nil || !r.client.IsConnectionOpen() {
		// Connected ends the loop: Permanent(nil) is its "done".
		_ = retry.Run(ctx, retry.Policy{Min: time.Second, Max: time.Minute}, r.log, "mqtt broker not reachable; will keep trying", func(ctx context.Context) error {
			if r.client.IsConnectionOpen() {
				return retry.Permanent(nil)
			}
			tok := r.client.Connect()
			select {
			case <-tok.Done():
			case <-ctx.Done():
				return nil
			}
			if err := tok.Error(); err != nil {
				if isAuthError(err) {
					r.log.Error("mqtt broker refused the login; check the user and password", "err", err)
				}
				return err
			}
			return retry.Permanent(nil)
		})
		if ctx.Err() != nil {
			return
		}
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		if r.client.IsConnectionOpen() {
			r.drain(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-tick.C:
		}
	}
}

// drain publishes what waits, oldest first, while the connection holds.
func (r *Remote) drain(ctx context.Context) {
	if !r.republish(ctx) {
		return
	}
	for ctx.Err() == nil {
		items, err := r.outbox.Peek(OutboxQueue, 32)
		if err != nil {
			r.log.Error("reading the mqtt outbox", "err", err)
			return
		}
		if len(items) == 0 {
			break
		}
		for _, it := range items {
			var m outboxItem
			if json.Unmarshal(it.Data, &m) != nil || m.Topic == "" {
				_ = r.outbox.Ack(OutboxQueue, it.Seq) // unreadable: nothing to send
				continue
			}
			if r.resendPending() || !r.publishAcked(ctx, m) {
				return // a new connection: start again with what to publish again
			}
			if err := r.outbox.Ack(OutboxQueue, it.Seq); err != nil {
				r.log.Error("removing a published message from the mqtt outbox", "err", err)
				return
			}
			r.remember(m)
		}
	}
	r.mu.Lock()
	lossy, dropped := r.lossy, r.dropped
	r.lossy, r.dropped = nil, 0
	r.mu.Unlock()
	if dropped > 0 {
		r.log.Warn("mqtt broker was away; oldest Meshtastic-topic messages were dropped", "dropped", dropped)
	}
	for _, m := range lossy {
		r.client.Publish(m.topic, 0, m.retain, m.payload)
	}
}

// publishAcked publishes at QoS 1 and waits for the broker's
// acknowledgement; it gives up at once when the connection is lost, since
// the outbox publishes the message again after the reconnect.
func (r *Remote) publishAcked(ctx context.Context, m outboxItem) bool {
	r.mu.Lock()
	lost := r.lost
	r.mu.Unlock()
	if lost == nil {
		return false
	}
	tok := r.client.Publish(m.Topic, 1, m.Retain, m.Payload)
	t := time.NewTimer(r.cfg.AckTimeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			r.log.Debug("mqtt publish failed; will resend", "topic", m.Topic, "err", err)
			return false
		}
		return true
	case <-lost:
	case <-ctx.Done(): // closing: the outbox keeps it for the next start
	case <-t.C:
		r.log.Debug("mqtt publish not acknowledged; will resend", "topic", m.Topic)
	}
	return false
}

// remember keeps an acknowledged message for the republish window.
func (r *Remote) remember(m outboxItem) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	i := 0
	for i < len(r.recent) && (now.Sub(r.recent[i].at) > r.cfg.RepublishWindow || len(r.recent)-i >= republishLimit) {
		i++
	}
	r.recent = append(r.recent[i:], recentMessage{item: m, at: now})
}

// republish publishes again, after a reconnect, what the broker
// acknowledged within the window before it. It reports false if the
// connection failed meanwhile.
func (r *Remote) republish(ctx context.Context) bool {
	r.mu.Lock()
	if !r.resend {
		r.mu.Unlock()
		return true
	}
	// The window reaches back from when the connection was lost, however
	// long the broker then stayed away.
	var again []outboxItem
	for _, m := range r.recent {
		if r.lostAt.Sub(m.at) <= r.cfg.RepublishWindow {
			again = append(again, m.item)
		}
	}
	r.mu.Unlock()
	if len(again) > 0 {
		r.log.Debug("publishing again what the broker took just before the reconnect", "messages", len(again))
	}
	for _, m := range again {
		if !r.publishAcked(ctx, m) {
			return false
		}
	}
	r.mu.Lock()
	r.resend = false
	r.mu.Unlock()
	return true
}

func (r *Remote) resendPending() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.resend
}

func (r *Remote) kick() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// onConnect restores every subscription after a (re)connect and starts
// the outbox draining.
func (r *Remote) onConnect(c paho.Client) {
	r.log.Info("connected to mqtt broker")
	r.mu.Lock()
	r.resend = r.everUp
	r.everUp = true
	r.lost = make(chan struct{})
	subs := make(map[string]Handler, len(r.subs))
	for f, h := range r.subs {
		subs[f] = h
	}
	reconnect := r.resend
	r.mu.Unlock()
	if w := r.cfg.Will; w != nil && reconnect {
		// The broker may have published the will while the connection was
		// down; the state it stands for is published again after it. The
		// lock keeps a newer state from being overtaken by this one.
		r.willMu.Lock()
		if r.willTopicState != nil {
			if err := r.publish(w.Topic, r.willTopicState, true); err != nil {
				r.log.Error("could not restate after a reconnect", "topic", w.Topic, "err", err)
			}
		}
		r.willMu.Unlock()
	}
	for filter, h := range subs {
		go func() {
			if err := r.subscribe(filter, h); err != nil {
				r.log.Error("mqtt subscription not restored", "filter", filter, "err", err)
			}
		}()
	}
	r.kick()
}

// pendingLimit bounds the messages held for subscribers not there yet.
const pendingLimit = 10000

// dispatch hands a message to the handlers whose filters match it, or
// holds it until Subscribe brings one.
func (r *Remote) dispatch(topic string, payload []byte) {
	r.deliverMu.Lock()
	defer r.deliverMu.Unlock()
	r.mu.Lock()
	var hs []Handler
	for f, h := range r.subs {
		if _, ok := auth.MatchTopic(f, topic); ok {
			hs = append(hs, h)
		}
	}
	if len(hs) == 0 {
		if len(r.pending) >= pendingLimit {
			r.pending = r.pending[1:]
			r.log.Warn("mqtt message for no subscriber dropped: too many waiting", "topic", topic)
		}
		r.pending = append(r.pending, lossyMessage{topic: topic, payload: bytes.Clone(payload)})
	}
	r.mu.Unlock()
	for _, h := range hs {
		h(topic, payload)
	}
}

// Publish hands a message to the broker. A reliable one is kept in the
// outbox until the broker has it; the error is the outbox's (a full disk).
// Any other is published at once, or queued while the broker is away.
func (r *Remote) Publish(topic string, payload []byte, retain bool) error {
	if w := r.cfg.Will; w != nil && retain && topic == w.Topic {
		r.willMu.Lock()
		defer r.willMu.Unlock()
		r.willTopicState = bytes.Clone(payload)
	}
	return r.publish(topic, payload, retain)
}

func (r *Remote) publish(topic string, payload []byte, retain bool) error {
	if r.cfg.Reliable != nil && r.cfg.Reliable(topic) {
		b, err := json.Marshal(outboxItem{Topic: topic, Payload: payload, Retain: retain})
		if err != nil {
			return err
		}
		if _, _, err := r.outbox.Push(OutboxQueue, b, ""); err != nil {
			return fmt.Errorf("publish %s: keeping it for the mqtt broker: %w", topic, err)
		}
		r.kick()
		return nil
	}
	if r.client.IsConnectionOpen() {
		r.client.Publish(topic, 0, retain, payload)
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.lossy) >= lossyLimit {
		r.lossy = r.lossy[1:]
		r.dropped++
	}
	r.lossy = append(r.lossy, lossyMessage{topic: topic, payload: bytes.Clone(payload), retain: retain})
	return nil
}

// Subscribe subscribes at QoS 1 and keeps the subscription across
// reconnects. Refused or unacknowledged, it is an error; while the broker
// is away it is made as soon as the connection is up.
func (r *Remote) Subscribe(filter string, h Handler) (func(), error) {
	// Messages held for this filter go first, and no new one overtakes
	// them: dispatch waits on deliverMu meanwhile.
	r.deliverMu.Lock()
	r.mu.Lock()
	r.subs[filter] = h
	var held []lossyMessage
	keep := r.pending[:0]
	for _, m := range r.pending {
		if _, ok := auth.MatchTopic(filter, m.topic); ok {
			held = append(held, m)
		} else {
			keep = append(keep, m)
		}
	}
	r.pending = keep
	r.mu.Unlock()
	for _, m := range held {
		h(m.topic, m.payload)
	}
	r.deliverMu.Unlock()
	r.mu.Lock()
	lost := r.lost
	r.mu.Unlock()
	if r.client.IsConnectionOpen() {
		if err := r.subscribe(filter, h); err != nil {
			select {
			case <-lost:
				// The connection went while subscribing: the subscription
				// is kept, and made with the others after the reconnect.
				r.log.Info("mqtt connection lost while subscribing; subscribing again after the reconnect", "filter", filter)
			default:
				r.mu.Lock()
				delete(r.subs, filter)
				r.mu.Unlock()
				return nil, err
			}
		}
	}
	return func() {
		r.mu.Lock()
		delete(r.subs, filter)
		r.mu.Unlock()
		if r.client.IsConnectionOpen() {
			r.client.Unsubscribe(filter).WaitTimeout(r.cfg.AckTimeout)
		}
	}, nil
}

func (r *Remote) subscribe(filter string, h Handler) error {
	tok := r.client.Subscribe(filter, 1, nil)
	if !tok.WaitTimeout(r.cfg.AckTimeout) {
		return fmt.Errorf("subscribe %q: no answer from the mqtt broker within %v", filter, r.cfg.AckTimeout)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("subscribe %q: %w", filter, err)
	}
	if st, ok := tok.(*paho.SubscribeToken); ok {
		if q, ok := st.Result()[filter]; ok && q == 0x80 {
			return fmt.Errorf("subscribe %q: refused by the mqtt broker", filter)
		}
	}
	return nil
}

// Connected reports whether the connection to the broker is open.
func (r *Remote) Connected() bool { return r.client.IsConnectionOpen() }

// Close stops publishing and disconnects. What the outbox still holds is
// published after the next start.
func (r *Remote) Close() error {
	r.stop()
	<-r.done
	r.client.Disconnect(250)
	return nil
}

// nullStore keeps nothing: the outbox is the bridge's store.
type nullStore struct{}

func (nullStore) Open()                             {}
func (nullStore) Put(string, packets.ControlPacket) {}
func (nullStore) Get(string) packets.ControlPacket  { return nil }
func (nullStore) All() []string                     { return nil }
func (nullStore) Del(string)                        {}
func (nullStore) Close()                            {}
func (nullStore) Reset()                            {}

// memOutbox is an outbox in memory, for a Remote given none.
type memOutbox struct {
	mu    sync.Mutex
	next  uint64
	items []spool.Item
}

func (m *memOutbox) Push(queue string, data []byte, _ string) (uint64, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.next++
	m.items = append(m.items, spool.Item{Seq: m.next, Queue: queue, At: time.Now(), Data: data})
	return m.next, false, nil
}

func (m *memOutbox) Peek(_ string, n int) ([]spool.Item, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.items[:min(n, len(m.items))]), nil
}

func (m *memOutbox) Ack(_ string, seqs ...uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.items = slices.DeleteFunc(m.items, func(it spool.Item) bool { return slices.Contains(seqs, it.Seq) })
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
