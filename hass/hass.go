// Package hass announces the mesh to Home Assistant through MQTT discovery
// (--hass). It is a consumer on the broker, like the XMPP gateway: it reads
// what the radio sides publish (every packet heard on topics.MeshRX, the
// node records, the radio and status records) and the XMPP sides' status
// records, and publishes, retained:
//
//   - one discovery config per entity under the discovery prefix,
//     <prefix>/<component>/<node_id>/<object_id>/config: a device per mesh
//     node, a device per radio side (the bridge) and a device per XMPP
//     side, with their sensors, a device tracker and text entities that
//     send to the mesh through the firmware's JSON downlink;
//   - each node's latest state as one JSON object (topics.HassNode), which
//     every entity of the node reads;
//   - the availability of the node entities (topics.HassAvailability).
//
// An entity is announced once its data has been heard. A node not heard for
// Config.Expire has its configs and state removed (empty retained
// messages); what was announced is kept in the state directory, so that
// this holds across restarts too.
//
// Broker handlers only queue; the package's own loop does the work, and
// Run owns every goroutine it starts.
package hass

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jshiffer/lora-xmpp-bridge/internal/intake"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// Bus is the part of the broker the publisher uses.
type Bus interface {
	Publish(topic string, payload []byte, retain bool) error
	// Subscribe registers h for filter. h may run on the publisher's
	// goroutine: the handlers here only copy the message and queue it.
	Subscribe(filter string, h func(topic string, payload []byte)) (unsubscribe func(), err error)
}

// Defaults.
const (
	DefaultPrefix   = "homeassistant"
	DefaultExpire   = 24 * time.Hour
	DefaultMaxNodes = 500
)

// Config configures the publisher.
type Config struct {
	// Prefix is Home Assistant's discovery prefix.
	Prefix string
	// Expire is how long a node may go unheard before its entities are
	// removed; it is also each node sensor's expire_after.
	Expire time.Duration
	// StateDir keeps what was announced (hass.json), so that it can be
	// removed after a restart; "" keeps nothing.
	StateDir string
	// MaxNodes bounds the nodes announced at once; past it the node heard
	// least recently is removed to make room.
	MaxNodes int
	// Sweep is how often unheard nodes are looked for; SaveInterval how
	// often the latest states are saved when nothing new was announced.
	Sweep, SaveInterval time.Duration
	// BirthDelay is the longest random wait before everything is
	// published again when Home Assistant announces it started, as its
	// documentation asks, so that many publishers do not answer at once.
	BirthDelay time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Defaults fills in what is unset.
func (c *Config) Defaults() {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Expire == 0 {
		c.Expire = DefaultExpire
	}
	if c.MaxNodes == 0 {
		c.MaxNodes = DefaultMaxNodes
	}
	if c.Sweep == 0 {
		c.Sweep = 30 * time.Second
	}
	if c.SaveInterval == 0 {
		c.SaveInterval = 10 * time.Minute
	}
	if c.BirthDelay == 0 {
		c.BirthDelay = 5 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if err := ValidPrefix(c.Prefix); err != nil {
		return err
	}
	if c.Expire <= 0 {
		return fmt.Errorf("expiry %v: want a positive duration", c.Expire)
	}
	if c.MaxNodes < 1 {
		return fmt.Errorf("most nodes %d: want at least 1", c.MaxNodes)
	}
	if c.Sweep <= 0 || c.SaveInterval < 0 || c.BirthDelay <= 0 {
		return fmt.Errorf("sweep %v, save interval %v, birth delay %v: want positive durations", c.Sweep, c.SaveInterval, c.BirthDelay)
	}
	return nil
}

// ValidPrefix checks a discovery prefix: topic levels without wildcards,
// and not among the bridge's own topics, which Home Assistant could not
// write its status to.
func ValidPrefix(p string) error {
	switch {
	case p == "":
		return errors.New("the discovery prefix is empty")
	case strings.ContainsAny(p, "+#\x00"), strings.HasPrefix(p, "/"), strings.HasSuffix(p, "/"), strings.Contains(p, "//"):
		return fmt.Errorf("discovery prefix %q: topic levels without wildcards (+ #) or empty levels, e.g. homeassistant", p)
	case topics.IsBridgeTopic(p + "/"):
		return fmt.Errorf("discovery prefix %q: the bridge's own topics are not for Home Assistant", p)
	}
	return nil
}

// StatusTopic is where Home Assistant publishes "online" when it starts
// (its birth message) and "offline" as its will: local tools must be
// allowed to write it, or the broker refuses Home Assistant's login.
func StatusTopic(prefix string) string { return prefix + "/status" }

// inboxSize bounds what the broker has handed over and the loop not yet
// taken in: a few packets a second from the mesh, and after each
// handshake the radio's node records (a few hundred).
const inboxSize = 4096

// Gateway is the Home Assistant publisher.
type Gateway struct {
	cfg   Config
	bus   Bus
	log   *slog.Logger
	inbox intake.Queue

	subscribed   chan struct{}
	behindLogged atomic.Int64 // unix nanos: when a full inbox was last logged
	// Dropped counts broker messages not taken in because the loop was
	// far behind: Home Assistant misses an update rather than the radio
	// link waiting for it.
	Dropped atomic.Uint64

	// Owned by the loop.
	st *state
}

// New builds the publisher; Run starts it.
func New(cfg Config, bus Bus, log *slog.Logger) (*Gateway, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log = log.With("component", "hass")
	g := &Gateway{
		cfg: cfg, bus: bus, log: log, inbox: intake.New(inboxSize),
		subscribed: make(chan struct{}),
	}
	g.st = newState(cfg, bus, log, func() int { return len(g.inbox) })
	return g, nil
}

// Subscribed is closed once Run listens on the broker.
func (g *Gateway) Subscribed() <-chan struct{} { return g.subscribed }

// Run publishes until ctx ends; call it once. It returns an error only
// when it cannot subscribe.
func (g *Gateway) Run(ctx context.Context) error {
	g.st.load()
	stopIntake := g.inbox.Start()
	unsubscribe, err := g.subscribe()
	if err != nil {
		stopIntake()
		return err
	}
	close(g.subscribed)
	// After what the subscriptions brought retained (on the embedded
	// broker, before Subscribe returned): what was announced in an earlier
	// run is published again, as it stands now.
	g.inbox.Wait(func(string, []byte) { g.st.restore() }, "", nil, nil)

	sweep := time.NewTicker(g.cfg.Sweep)
	defer sweep.Stop()
	var birth *time.Timer
	var birthC <-chan time.Time
	// Any local client may write the birth topic: at most one republish a
	// minute, so a client repeating "online" cannot keep the broker busy.
	var lastBirth time.Time
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-sweep.C:
			// Skipped when the loop is far behind: the next one comes.
			g.inbox.Offer(func(string, []byte) { g.st.sweep() }, "", nil)
		case <-g.st.births:
			if birth == nil {
				birth = time.NewTimer(birthWait(lastBirth, time.Now(), rand.N(g.cfg.BirthDelay)+1))
				birthC = birth.C
			}
		case <-birthC:
			birth, birthC, lastBirth = nil, nil, time.Now()
			g.inbox.Offer(func(string, []byte) { g.st.republish() }, "", nil)
		}
	}
	if birth != nil {
		birth.Stop()
	}
	unsubscribe()
	// Taken in order after what is still queued: the entities go
	// unavailable (nobody keeps them up to date now) and what was announced
	// is saved for the next start.
	g.inbox.Wait(func(string, []byte) { g.st.stop() }, "", nil, nil)
	stopIntake()
	return nil
}

// minBirthSpacing is the least time between two republishes for Home
// Assistant's birth message.
const minBirthSpacing = time.Minute

// birthWait is how long to wait before republishing for a birth message
// at now: the random delay that spreads many publishers' load, or longer,
// to keep minBirthSpacing after the last republish.
func birthWait(last, now time.Time, jitter time.Duration) time.Duration {
	return max(jitter, last.Add(minBirthSpacing).Sub(now))
}

// subscribe listens on the broker; each message is queued for the loop.
func (g *Gateway) subscribe() (unsubscribe func(), err error) {
	var unsubs []func()
	unsubscribe = func() {
		for _, u := range unsubs {
			u()
		}
	}
	for _, s := range []struct {
		filter string
		h      func(string, []byte)
	}{
		{topics.StatusFilter, g.st.onStatus},
		{topics.XMPPStatusFilter, g.st.onXMPPStatus},
		{topics.RadioFilter, g.st.onRadio},
		{topics.NodesFilter, g.st.onNode},
		{topics.MeshRX, g.st.onPacket},
		{StatusTopic(g.cfg.Prefix), g.st.onHomeAssistant},
	} {
		unsub, err := g.bus.Subscribe(s.filter, g.handOver(s.h))
		if err != nil {
			unsubscribe()
			return nil, fmt.Errorf("subscribe to %s: %w", s.filter, err)
		}
		unsubs = append(unsubs, unsub)
	}
	return unsubscribe, nil
}

// handOver makes the broker handler of a subscription: it copies the
// message into the loop's queue. A full queue drops it (counted, logged
// at most once a minute) rather than make the publisher, the radio link's
// loop, wait for Home Assistant's sake.
func (g *Gateway) handOver(handle func(string, []byte)) func(string, []byte) {
	return func(topic string, payload []byte) {
		if g.inbox.Offer(handle, topic, payload) {
			return
		}
		g.Dropped.Add(1)
		if now := time.Now().UnixNano(); now-g.behindLogged.Swap(now) >= int64(time.Minute) {
			g.log.Warn("Home Assistant publishing is behind; dropping updates", "topic", topic, "dropped", g.Dropped.Load())
		}
	}
}
