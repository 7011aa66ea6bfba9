// Package serialgw is the radio link: it speaks the Meshtastic stream API
// over a serial port or TCP, keeps the link alive and recovers it, owns the
// one transmit queue, and meets the rest of the bridge only through the
// broker: it publishes what the radio hears on Meshtastic-compatible and
// bridge topics, and what the radio itself sends (and the gateway's NodeInfo
// and, opted in, its map report) on the Meshtastic-compatible ones, and
// sends what arrives on the downlink topics.
package serialgw

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/internal/intake"
	"github.com/jshiffer/lora-xmpp-bridge/internal/retry"
	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// Bus is the part of the broker the radio link uses.
type Bus interface {
	Publish(topic string, payload []byte, retain bool) error
	// Subscribe registers h for filter. h may run on the publisher's
	// goroutine: the radio link's handlers only copy the message and hand
	// it to the radio link's own loop, or refuse it when that loop is far
	// behind (see handOver).
	Subscribe(filter string, h func(topic string, payload []byte)) (unsubscribe func(), err error)
}

// Config configures the radio link.
type Config struct {
	Device Device
	// Mesh is the name of the mesh the radio is on, as the operator gives
	// it with --mesh: radios with the same name are one mesh. It goes into
	// the radio record; empty when not given.
	Mesh string
	// Root overrides the topic root; empty means msh/<region of the radio>.
	Root string
	// Encrypt publishes envelopes encrypted with the channel key, as the
	// firmware does; false publishes decoded packets.
	Encrypt bool
	// PublicBroker says the broker is reachable beyond private networks.
	// Packets whose senders did not allow MQTT uplink are then withheld
	// from the Meshtastic topics (the firmware waives the rule for brokers
	// on private addresses), and no PKI direct message is published at all.
	PublicBroker bool
	// StateDir keeps the node database and the radio's node id; empty
	// keeps nothing.
	StateDir string
	// Spool keeps the transmit queue and the heard packets across
	// restarts; nil keeps them in memory only.
	Spool Spool

	TextInterval      time.Duration // spacing of text packets, at least 2 s for the firmware
	HeartbeatInterval time.Duration // well inside the firmware's 15-minute idle timeout
	ReplyTimeout      time.Duration // how long a heartbeat may go unanswered
	HandshakeTimeout  time.Duration // per want_config attempt
	SendTimeout       time.Duration // wait for the radio's QueueStatus for a packet
	// AirtimeShare is the share of the region's duty cycle that bridged
	// packets may use (EU_868 allows 10 % of an hour for everything a node
	// sends; 0.5 leaves half of it to the node's own traffic and relaying).
	AirtimeShare float64
	// AirtimeWindow is the rolling window of the duty cycle: an hour, as
	// the firmware counts it.
	AirtimeWindow time.Duration
	BackoffMin    time.Duration
	BackoffMax    time.Duration
	QueueLimit    int
	// RefusalGrace is how long after the radio takes a packet a refusal
	// of it may still come (the firmware drops a text under its rate limit,
	// or a packet over its duty cycle, after taking it): a JSON downlink is
	// reported sent once this has passed without one.
	RefusalGrace time.Duration
	// AckTimeout is how long a direct message from the JSON downlink waits
	// for its destination's acknowledgement, or the radio's giving up,
	// before it is reported failed.
	AckTimeout time.Duration

	// NodeInfoInterval is how often the radio's own NodeInfo is published
	// on the Meshtastic topics, besides after each handshake: 3 hours, the
	// firmware's NodeInfo broadcast interval.
	NodeInfoInterval time.Duration
	// MapReport publishes the firmware's map report on <root>/2/map/, for
	// meshmap.net and meshtastic-map; off unless the operator opts in.
	MapReport bool
	// MapReportPrecision is how many bits of latitude and longitude the map
	// report keeps (see ValidMapReportPrecision); 0 means the default, 14.
	MapReportPrecision uint32
	// MapReportInterval is the least time between two map reports: an
	// hour, the firmware's default.
	MapReportInterval time.Duration
	// StatusInterval is how often the status record is published again
	// when the queue depth or the airtime used has changed: 30 s.
	StatusInterval time.Duration
}

// Defaults fills in unset durations and limits.
func (c *Config) Defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.TextInterval, 2500*time.Millisecond)
	def(&c.HeartbeatInterval, 60*time.Second)
	def(&c.ReplyTimeout, 20*time.Second)
	def(&c.HandshakeTimeout, 60*time.Second)
	def(&c.SendTimeout, 15*time.Second)
	def(&c.BackoffMin, time.Second)
	def(&c.BackoffMax, time.Minute)
	if c.QueueLimit == 0 {
		c.QueueLimit = 200
	}
	if c.AirtimeShare == 0 {
		c.AirtimeShare = 0.5
	}
	def(&c.AirtimeWindow, time.Hour)
	def(&c.RefusalGrace, 2*time.Second)
	def(&c.AckTimeout, 5*time.Minute)
	def(&c.NodeInfoInterval, 3*time.Hour)
	def(&c.MapReportInterval, time.Hour)
	def(&c.StatusInterval, 30*time.Second)
	if c.MapReportPrecision == 0 {
		c.MapReportPrecision = DefaultMapReportPrecision
	}
}

// Stats are the radio link's counters.
type Stats struct {
	FramesIn, FramesRejected, FramesOversize, LogLines atomic.Uint64
	PacketsIn, Duplicates, PacketsPublished            atomic.Uint64
	Sent, SendFailed, DownlinkRejected                 atomic.Uint64
	Handshakes, Reconnects                             atomic.Uint64
	// Client proxy messages not passed down to the radio: too large for
	// a frame, or the radio link not keeping up.
	ProxyOversize, ProxyQueueFull atomic.Uint64
}

// Gateway is the radio link.
type Gateway struct {
	cfg   Config
	bus   Bus
	log   *slog.Logger
	Stats Stats

	tx    *txQueue
	pace  *pacer
	air   airtime // used only by the session loop
	ids   idGen
	seen  *dedupe
	nodes *nodeDB

	proxyOut chan *meshpb.MqttClientProxyMessage // broker -> radio in client proxy mode
	inbox    intake.Queue                        // broker -> intake: send requests and JSON downlinks

	naks           sync.Map    // Routing error name -> *atomic.Uint64
	up             atomic.Bool // a session has completed its handshake
	storageFailing atomic.Bool
	lastTick       atomic.Int64 // unix nanos of the last pass of the main loop, for the watchdog
	earlyLogged    atomic.Bool  // a JSON downlink waiting for the first handshake was logged

	airBlocked atomic.Bool  // packets wait because the airtime share is spent for now
	airNext    atomic.Int64 // unix nanos when the packet held for airtime may go

	// When a client proxy message of each kind was last dropped (unix
	// nanos): the first drop of a burst is logged as a warning, the rest at
	// debug level.
	proxyOversizeLogged, proxyFullLogged atomic.Int64

	// When the radio's NodeInfo and the map report were last published;
	// used only by the session loop. They outlive sessions, so a radio
	// that reconnects often does not report to the map more often.
	nodeInfoAt, mapReportAt time.Time

	// statusMu orders the status record's publications, so the one
	// published last is the one load describes.
	statusMu        sync.Mutex
	mu              sync.Mutex
	radio           *radioState // the radio as of the last completed handshake
	root            string
	unsubs          []func() // subscriptions that depend on the radio's config
	upSince         time.Time
	status          topics.StatusRecord // as last published, without the airtime state
	load            statusLoad          // the queue and airtime in the status record last published
	airBlockedSince time.Time
	// gwID is the gateway id the radio side's records and per-radio send
	// topic end in: the radio's node id, as kept in the state directory
	// and then as of the last handshake; "" until a radio first answers.
	gwID    string
	txUnsub func() // the subscription of MeshTXTo(gwID), for the whole of Run

	// dlMu orders the JSON downlinks' results (see jsonresult.go);
	// dlWaiting holds those the radio took whose result waits, by packet id.
	dlMu      sync.Mutex
	dlWaiting map[uint32]*request

	// wires remembers the packet ids recent requests went with, for a
	// request offered again after it was sent, and for an amend too late.
	wires wireIDs
}

// New builds the radio link. Run starts it.
func New(cfg Config, bus Bus, log *slog.Logger) (*Gateway, error) {
	cfg.Defaults()
	if cfg.MapReport {
		if err := ValidMapReportPrecision(cfg.MapReportPrecision); err != nil {
			return nil, fmt.Errorf("map report precision %d: %w", cfg.MapReportPrecision, err)
		}
	}
	if cfg.TextInterval < 2*time.Second {
		log.Warn("text interval below the firmware's 2 s rate limit: the radio will drop texts", "interval", cfg.TextInterval)
	}
	nodes, err := openNodeDB(cfg.StateDir)
	if err != nil {
		if nodes == nil {
			return nil, err
		}
		log.Warn("node database", "err", err)
	}
	// The gateway id from the last run: with it the status is published,
	// and the radio's send topic taken, before the radio answers.
	id, err := loadRadioNode(cfg.StateDir)
	if err != nil {
		log.Warn("ignoring the kept radio node id; the radio's handshake tells it", "err", err)
	}
	return &Gateway{
		cfg: cfg, bus: bus, log: log.With("component", "radio"),
		tx: newTxQueue(cfg.QueueLimit), pace: newPacer(cfg.TextInterval),
		seen: newDedupe(4096, 2*time.Hour), nodes: nodes,
		proxyOut: make(chan *meshpb.MqttClientProxyMessage, 64),
		// As many as the transmit queue holds: a burst the queue would take
		// is not refused at the door.
		inbox:     intake.New(cfg.QueueLimit),
		gwID:      id,
		dlWaiting: map[uint32]*request{},
	}, nil
}

// Run connects to the radio and keeps it connected until ctx ends.
func (g *Gateway) Run(ctx context.Context) error {
	if err := g.restore(); err != nil {
		return err
	}
	stopIntake := g.inbox.Start()
	var unsubs []func()
	stopListening := func() {
		for _, u := range unsubs {
			u()
		}
		g.dropTxSubscription()
		// What was handed over before the subscriptions ended is still
		// taken in: it was published to us.
		stopIntake()
	}
	type sub struct {
		filter string
		h      func(string, []byte)
	}
	subs := []sub{{topics.MeshTX, g.handOver(g.onMeshTX, g.refuseMeshTX)}}
	for _, f := range g.downlinkFilters() {
		subs = append(subs, sub{f, g.handOver(g.onJSONDownlink, g.refuseDownlink)})
	}
	for _, s := range subs {
		unsub, err := g.bus.Subscribe(s.filter, s.h)
		if err != nil {
			stopListening()
			return err
		}
		unsubs = append(unsubs, unsub)
	}
	// Requests for the radio of the last run are taken at once; a
	// handshake with another radio moves the subscription.
	g.mu.Lock()
	id := g.gwID
	g.mu.Unlock()
	if id != "" {
		if err := g.subscribeTxTo(id); err != nil {
			stopListening()
			return err
		}
	}
	for _, n := range g.nodes.all() {
		g.publishNode(n)
	}
	g.publishStatus(topics.LinkConnecting, "")

	saveDone := make(chan struct{})
	saveCtx, stopSave := context.WithCancel(ctx)
	go func() { defer close(saveDone); g.saveLoop(saveCtx) }()
	defer func() {
		stopSave()
		<-saveDone
		stopListening()
		g.endDownlinkWaits()
		if n := g.tx.len(); n > 0 {
			g.log.Warn("stopping with packets still queued for the radio; they are not sent", "queued", n)
		}
		g.dropRadioSubscriptions()
		g.airBlocked.Store(false)
		g.publishStatus(topics.LinkOffline, "")
		if err := g.nodes.save(); err != nil {
			g.log.Error("saving node database", "err", err)
		}
	}()

	p := retry.Policy{Min: g.cfg.BackoffMin, Max: g.cfg.BackoffMax, Healthy: time.Minute, Tick: g.tick}
	return retry.Run(ctx, p, g.log.With("device", g.cfg.Device.String()), "radio link down; reconnecting", g.connect)
}

// connect is one attempt of the reconnect loop: it opens the radio and
// runs a session on it until the link fails or ctx ends.
func (g *Gateway) connect(ctx context.Context) error {
	conn, name, err := g.cfg.Device.open(ctx)
	if ctx.Err() != nil {
		if conn != nil {
			conn.Close()
		}
		return nil
	}
	if err != nil {
		g.publishStatus(topics.LinkDisconnected, err.Error())
		return err
	}
	g.log.Info("radio port open", "device", name)
	err = newSession(g, conn, name).run(ctx)
	g.up.Store(false)
	if ctx.Err() != nil {
		return nil
	}
	g.Stats.Reconnects.Add(1)
	// With the radio away the link, not airtime, is what holds packets.
	g.airBlocked.Store(false)
	g.airNext.Store(0)
	g.publishStatus(topics.LinkDisconnected, err.Error())
	return fmt.Errorf("link to %s lost: %w", name, err)
}

// tick records that the main loop is making progress.
func (g *Gateway) tick() { g.lastTick.Store(time.Now().UnixNano()) }

// LastProgress is when the radio link's loop last made progress; a loop
// that stops progressing is wedged, whatever the radio is doing.
func (g *Gateway) LastProgress() time.Time { return time.Unix(0, g.lastTick.Load()) }

// Up reports whether the radio is connected and has completed its handshake.
func (g *Gateway) Up() bool { return g.up.Load() }

func (g *Gateway) saveLoop(ctx context.Context) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	status := time.NewTicker(g.cfg.StatusInterval)
	defer status.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := g.nodes.save(); err != nil {
				g.log.Error("saving node database", "err", err)
			}
		case <-status.C:
			g.refreshStatus()
		}
	}
}

// SpoolQueues names the spool queues the radio link keeps what waits for
// the mesh in, by the label the daemon's metrics give each.
func (g *Gateway) SpoolQueues() map[string]string { return map[string]string{"radio": txQueueName} }

// QueueLen is the number of packets waiting for the radio.
func (g *Gateway) QueueLen() int { return g.tx.len() }

// currentRadio returns the radio as of the last handshake, or nil.
func (g *Gateway) currentRadio() (*radioState, string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.radio, g.root
}

// onHandshake makes a freshly handshaken radio current: it publishes the
// radio's state and (re)subscribes what depends on the radio's config.
func (g *Gateway) onHandshake(r *radioState) {
	root := topics.Root(g.cfg.Root, r.region())
	g.air.configure(r.lora, g.cfg.AirtimeWindow, g.cfg.AirtimeShare)
	g.dropRadioSubscriptions()
	id := r.gatewayID()
	g.mu.Lock()
	old := g.gwID
	g.mu.Unlock()
	if id != old {
		g.moveGateway(old, id)
	}
	g.mu.Lock()
	g.radio, g.root, g.upSince = r, root, time.Now()
	g.mu.Unlock()

	var unsubs []func()
	sub := func(filter string, h func(string, []byte)) {
		u, err := g.bus.Subscribe(filter, h)
		if err != nil {
			g.log.Error("subscribe", "filter", filter, "err", err)
			return
		}
		unsubs = append(unsubs, u)
	}
	if r.proxyActive() {
		// In client proxy mode the firmware subscribes to nothing itself: we
		// mirror the subscriptions it would make and pass the traffic down.
		any := false
		for i, c := range r.channels {
			if name, ok := r.channelName(uint32(i)); ok && c.GetSettings().GetDownlinkEnabled() {
				sub(topics.EnvelopeFilter(root, name), g.onProxyDownlink)
				any = true
			}
		}
		if any {
			sub(topics.EnvelopeFilter(root, topics.PKIChannel), g.onProxyDownlink)
		}
	}
	g.mu.Lock()
	g.unsubs = unsubs
	g.mu.Unlock()

	g.publishJSON(topics.Radio(id), r.info(root, g.cfg.Mesh), true)
	g.earlyLogged.Store(false)
	g.up.Store(true)
	g.publishStatus(topics.LinkOnline, "")
	g.log.Info("radio ready", "node", r.gatewayID(), "name", r.self.GetLongName(), "firmware", r.firmware,
		"region", r.region(), "preset", r.presetName(), "root", root, "client_proxy", r.proxyActive(), "queued", g.tx.len())
}

// moveGateway makes id, the node id of a radio that differs from the one
// known before (old, "" if none), the radio side's gateway id. The send
// topic of the new radio is subscribed before it is reported online,
// since a requester sends to a radio once it sees it online; the old
// radio's records are cleared, so nobody sends to it here any more.
func (g *Gateway) moveGateway(old, id string) {
	if old != "" {
		g.log.Info("another radio answered; its node id becomes the gateway id", "old", old, "node", id)
	}
	g.dropTxSubscription()
	if err := g.subscribeTxTo(id); err != nil {
		// Requests on topics.MeshTX still come in.
		g.log.Error("subscribe", "filter", topics.MeshTXTo(id), "err", err)
	}
	if err := saveRadioNode(g.cfg.StateDir, id); err != nil {
		g.log.Warn("cannot keep the radio's node id; after a restart its status waits for the handshake", "err", err)
	}
	g.mu.Lock()
	g.gwID = id
	g.mu.Unlock()
	if old != "" {
		// An empty retained message removes the retained record.
		g.publish(topics.Status(old), nil, true)
		g.publish(topics.Radio(old), nil, true)
	}
}

// subscribeTxTo subscribes the send topic of the radio whose gateway id is
// id, with the same handler as topics.MeshTX, and its amend topic: both
// through the one intake, so an amend is taken in after its request.
func (g *Gateway) subscribeTxTo(id string) error {
	unsub, err := g.bus.Subscribe(topics.MeshTXTo(id), g.handOver(g.onMeshTX, g.refuseMeshTX))
	if err != nil {
		return err
	}
	unsubAmend, err := g.bus.Subscribe(topics.MeshAmendTo(id), g.handOver(g.onAmend, g.refuseAmend))
	if err != nil {
		unsub()
		return err
	}
	g.mu.Lock()
	g.txUnsub = func() { unsub(); unsubAmend() }
	g.mu.Unlock()
	return nil
}

func (g *Gateway) dropTxSubscription() {
	g.mu.Lock()
	unsub := g.txUnsub
	g.txUnsub = nil
	g.mu.Unlock()
	if unsub != nil {
		unsub()
	}
}

func (g *Gateway) dropRadioSubscriptions() {
	g.mu.Lock()
	unsubs := g.unsubs
	g.unsubs = nil
	g.mu.Unlock()
	for _, u := range unsubs {
		u()
	}
}

func (g *Gateway) publishStatus(state topics.LinkState, errText string) {
	g.mu.Lock()
	g.status = topics.StatusRecord{State: state, Device: g.cfg.Device.String(), Since: time.Now().UTC().Format(time.RFC3339), Error: errText, Node: g.gwID}
	g.mu.Unlock()
	g.republishStatus()
}

// republishStatus publishes the status record as last set, with the
// current airtime state, queue depth and airtime use. Until a radio first answers there is no gateway
// id to publish it under: it is kept, and the next publish is current.
func (g *Gateway) republishStatus() {
	g.statusMu.Lock()
	defer g.statusMu.Unlock()
	load := g.statusLoad()
	g.mu.Lock()
	rec, id := g.status, g.gwID
	if g.airBlocked.Load() {
		rec.AirtimeBlocked, rec.AirtimeBlockedSince = true, g.airBlockedSince.UTC().Format(time.RFC3339)
	}
	rec.QueueDepth, rec.AirtimeUsed, rec.AirtimeBudget = load.queue, load.used, load.budget
	g.load = load
	g.mu.Unlock()
	if rec.State != "" && id != "" {
		g.publishJSON(topics.Status(id), rec, true)
	}
}

// setAirtimeBlocked records whether packets wait for airtime and, if
// blocked, when the next may go. A change is logged and published in the
// status record, whose readers (the XMPP gateway) tell the people waiting.
func (g *Gateway) setAirtimeBlocked(blocked bool, next time.Time) {
	if blocked {
		g.airNext.Store(next.UnixNano())
	} else {
		g.airNext.Store(0)
	}
	if g.airBlocked.Swap(blocked) == blocked {
		return
	}
	if blocked {
		g.mu.Lock()
		g.airBlockedSince = time.Now()
		g.mu.Unlock()
		g.log.Warn("airtime share spent for now; packets for the mesh wait", "next_in", time.Until(next).Round(time.Second), "queued", g.tx.len())
	} else {
		g.log.Info("airtime available again; packets for the mesh go out")
	}
	g.republishStatus()
}

// AirtimeBlocked reports whether packets for the mesh wait because the
// bridge's airtime share is spent for now, and how long until the next of
// them may go.
func (g *Gateway) AirtimeBlocked() (bool, time.Duration) {
	if !g.airBlocked.Load() {
		return false, 0
	}
	return true, max(0, time.Until(time.Unix(0, g.airNext.Load())))
}

func (g *Gateway) publishNode(n topics.NodeRecord) {
	g.publishJSON(topics.Node(n.ID), n, true)
}

func (g *Gateway) publishJSON(topic string, v any, retain bool) {
	b, err := json.Marshal(v)
	if err != nil {
		g.log.Error("encode", "topic", topic, "err", err)
		return
	}
	g.publish(topic, b, retain)
}

func (g *Gateway) publish(topic string, b []byte, retain bool) {
	if err := g.bus.Publish(topic, b, retain); err != nil {
		g.log.Warn("publish failed", "topic", topic, "err", err)
	}
}

// validate checks that the radio may send a request's packet.
func validate(r *request) error {
	d := r.data
	if d.GetPortnum() == meshpb.PortNum_TEXT_MESSAGE_APP && len(d.GetPayload()) > topics.MaxTextBytes {
		return fmt.Errorf("%w: text of %d bytes; at most %d fit in one packet (split it before sending)", errTooLarge, len(d.GetPayload()), topics.MaxTextBytes)
	}
	if len(d.GetPayload()) > maxPayload {
		return fmt.Errorf("%w: payload of %d bytes; at most %d", errTooLarge, len(d.GetPayload()), maxPayload)
	}
	if d.GetPortnum() == meshpb.PortNum_ADMIN_APP {
		return fmt.Errorf("%w: admin packets are not bridged", errRefused)
	}
	return nil
}

// enqueue validates a request and queues it, or reports why not.
func (g *Gateway) enqueue(r *request) error {
	if err := validate(r); err != nil {
		return err
	}
	r.queued = time.Now()
	if r.wireID == 0 {
		// Chosen now and kept with the request, so a resend after a crash
		// is recognisably the same packet.
		r.wireID = g.ids.next()
	}
	if g.tx.len() >= g.cfg.QueueLimit {
		return errQueueFull
	}
	dup, err := g.persist(r)
	if err != nil {
		if !g.storageFailing.Swap(true) {
			g.log.Error("cannot write to the state directory (disk full?); refusing packets for the radio until it works again", "err", err)
		}
		return fmt.Errorf("%w: %w", errStorage, err)
	}
	if g.storageFailing.Swap(false) {
		g.log.Info("the state directory takes writes again; accepting packets for the radio")
	}
	if dup {
		g.log.Debug("send request already accepted before; ignored", "origin", r.origin, "request", r.id)
		if !g.tx.has(r.origin, r.id) {
			// Sent already: its result may have been lost with a
			// requester that stopped, and it asks again until it has one.
			// The id chosen above is not the one it went with.
			r.wireID = g.wires.get(r.origin, r.id)
			g.publishResult(r, meshpb.Routing_NONE)
		}
		return nil
	}
	if r.dl != nil && r.downlink == nil {
		g.downlinkQueued(r)
	}
	// Kept on disk and reported queued: it is accepted, past the limit
	// checked above should a resend have been put back meanwhile.
	g.tx.restore(r)
	return nil
}

var (
	errTooLarge = errors.New("too large")
	errRefused  = errors.New("refused")
	errStorage  = errors.New("cannot store it")
)

// handOver makes the broker handler of a subscription: it copies the
// message and hands it to the intake loop, so that the publisher's
// goroutine (the XMPP gateway's loop, or the broker's) never waits for
// the spool. When the intake is a whole queue's worth behind, the request
// is refused as a full queue refuses it, by refuse, and its sender told.
func (g *Gateway) handOver(handle, refuse func(topic string, payload []byte)) func(string, []byte) {
	return func(topic string, payload []byte) {
		if !g.inbox.Offer(handle, topic, payload) {
			refuse(topic, payload)
		}
	}
}

// errBehind refuses what arrives while the intake is a queue's worth behind.
var errBehind = fmt.Errorf("%w: requests arrive faster than they can be kept", errQueueFull)

// refuseMeshTX answers a send request the intake has no room for.
func (g *Gateway) refuseMeshTX(topic string, payload []byte) {
	req, err := topics.ParseSendRequest(payload)
	if err != nil {
		g.malformedRequest(topic, err)
		return
	}
	g.refuse(&request{id: req.ID, origin: req.Origin, channel: req.ChannelIndex}, refusal(errBehind), errBehind)
}

// refuseDownlink answers a JSON downlink the intake has no room for.
func (g *Gateway) refuseDownlink(topic string, payload []byte) {
	t, err := topics.Parse(topic)
	if err != nil || !t.IsJSONDownlink() {
		return
	}
	if radio, root := g.currentRadio(); radio != nil && t.Root != root {
		return // another root's downlink, which would have been ignored anyway
	}
	g.rejectDownlink(g.newDownlink(t.Root, payload), errBehind)
}

// newDownlink makes the request of a JSON downlink that came under root,
// with its client's "id" when it has a usable one.
func (g *Gateway) newDownlink(root string, payload []byte) *request {
	client, _ := topics.DownlinkID(payload)
	return &request{origin: topics.OriginJSONDownlink, id: g.ids.next(), root: root, dl: &downlinkState{client: client}}
}

func (g *Gateway) malformedRequest(topic string, err error) {
	g.Stats.DownlinkRejected.Add(1)
	g.log.Warn("ignoring malformed send request", "topic", topic, "err", err)
}

// onMeshTX takes in a send request from another gateway, on topics.MeshTX
// or this radio's own send topic: validate, keep, queue.
func (g *Gateway) onMeshTX(topic string, payload []byte) {
	req, err := topics.ParseSendRequest(payload)
	if err != nil {
		g.malformedRequest(topic, err)
		return
	}
	r := &request{id: req.ID, origin: req.Origin, to: req.To, channel: req.ChannelIndex, data: req.Data}
	if r.to == 0 {
		r.to = mesh.Broadcast
	}
	if name := req.Channel; name != "" {
		// Before the first handshake the channel names are unknown: the
		// name is resolved when the packet goes out.
		if radio, _ := g.currentRadio(); radio == nil {
			r.chName = name
		} else if idx, err := radio.channelIndex(name); err != nil {
			g.refuse(r, meshpb.Routing_NO_CHANNEL, err)
			return
		} else {
			r.channel = idx
		}
	}
	if err := g.enqueue(r); err != nil {
		g.refuse(r, refusal(err), err)
	}
}

// refusal names why a request was not queued, in the terms the requester
// reports: too large; the queue full (too much at once: RATE_LIMIT_EXCEEDED);
// the spool failing (the bridge cannot keep it: NO_INTERFACE); else invalid.
func refusal(err error) meshpb.Routing_Error {
	switch {
	case errors.Is(err, errTooLarge):
		return meshpb.Routing_TOO_LARGE
	case errors.Is(err, errQueueFull):
		return meshpb.Routing_RATE_LIMIT_EXCEEDED
	case errors.Is(err, errStorage):
		return meshpb.Routing_NO_INTERFACE
	}
	return meshpb.Routing_BAD_REQUEST
}

// countNAK counts a refusal by its reason.
func (g *Gateway) countNAK(reason meshpb.Routing_Error) {
	v, _ := g.naks.LoadOrStore(reason.String(), new(atomic.Uint64))
	v.(*atomic.Uint64).Add(1)
}

// NAKs returns how many sends were refused, by reason.
func (g *Gateway) NAKs() map[string]float64 {
	out := map[string]float64{}
	g.naks.Range(func(k, v any) bool {
		out[k.(string)] = float64(v.(*atomic.Uint64).Load())
		return true
	})
	return out
}

func (g *Gateway) refuse(r *request, reason meshpb.Routing_Error, err error) {
	g.Stats.SendFailed.Add(1)
	g.log.Warn("send refused", "origin", r.origin, "request", r.id, "reason", reason.String(), "err", err)
	g.report(r, reason, 0, err.Error())
}

// publishResult reports a request's outcome on topics.MeshResult as a
// routing packet whose request_id is the request's id, and a JSON
// downlink's on topics.JSONResult too.
func (g *Gateway) publishResult(r *request, reason meshpb.Routing_Error) {
	g.report(r, reason, 0, "")
}

// report is publishResult with what a JSON downlink's result says
// besides: the node a routing reply came from, and why it was refused
// (empty: the reason's usual meaning).
func (g *Gateway) report(r *request, reason meshpb.Routing_Error, from uint32, detail string) {
	g.done(r)
	if reason != meshpb.Routing_NONE {
		g.countNAK(reason)
	}
	res := topics.Result{Origin: r.origin, RequestID: r.id, Reason: reason, Channel: r.channel, PacketID: r.wireID}
	if reason == meshpb.Routing_NONE {
		g.wires.add(r.origin, r.id, r.wireID)
	}
	if radio, _ := g.currentRadio(); radio != nil {
		res.Radio = radio.myNum
	}
	if b, err := res.Marshal(); err != nil {
		g.log.Error("encode", "topic", topics.MeshResult, "err", err)
	} else {
		g.publish(topics.MeshResult, b, false)
	}
	if r.dl != nil {
		g.downlinkOutcome(r, reason, from, detail)
	}
}

// downlinkFilters are the subscriptions for the JSON downlink. With the
// root taken from the radio's region, it is unknown until the first
// handshake, and may change with the radio's config: every root the
// firmware could use (msh, msh/<REGION>) is subscribed for the whole run,
// and onJSONDownlink keeps what is under the radio's own root.
func (g *Gateway) downlinkFilters() []string {
	if g.cfg.Root != "" {
		return []string{topics.JSONDownlinkFilter(topics.Root(g.cfg.Root, ""))}
	}
	return []string{
		topics.JSONDownlinkFilter(topics.DefaultRoot),
		topics.JSONDownlinkFilter(topics.DefaultRoot + "/+"),
	}
}

// onJSONDownlink takes in the firmware's JSON downlink (sendtext, sendposition).
// Before the first handshake the radio's node number and root are unknown:
// the message is queued as it is, and parsed when it goes out. Each gets
// its results on topics.JSONResult (see jsonresult.go).
func (g *Gateway) onJSONDownlink(topic string, payload []byte) {
	t, err := topics.Parse(topic)
	if err != nil || !t.IsJSONDownlink() {
		return
	}
	radio, root := g.currentRadio()
	if radio == nil {
		r := g.newDownlink(t.Root, payload)
		r.downlink = payload
		if err := g.enqueue(r); err != nil {
			g.rejectDownlink(r, err)
			return
		}
		if !g.earlyLogged.Swap(true) {
			g.log.Info("JSON downlink before the radio's first handshake; queued until the radio is ready", "topic", topic)
		} else {
			g.log.Debug("JSON downlink before the radio's first handshake; queued", "topic", topic)
		}
		return
	}
	if t.Root != root {
		return // another root's downlink, which the firmware would not have subscribed to
	}
	r := &request{origin: topics.OriginJSONDownlink, id: g.ids.next(), root: t.Root, dl: &downlinkState{}}
	if !g.parseDownlink(r, payload, radio.myNum) {
		return
	}
	if err := g.enqueue(r); err != nil {
		g.rejectDownlink(r, err)
	}
}

// parseDownlink fills in a JSON downlink's request from its message for
// the radio with node number num, or refuses it and reports false. A
// direct message asks for an acknowledgement, so its sender learns
// whether it arrived.
func (g *Gateway) parseDownlink(r *request, payload []byte, num uint32) bool {
	dl, client, err := ParseDownlink(payload, num)
	r.dl.client = client
	if err != nil {
		g.Stats.DownlinkRejected.Add(1)
		g.log.Warn("ignoring JSON downlink", "root", r.root, "request", r.id, "err", err)
		g.done(r)
		reason := meshpb.Routing_BAD_REQUEST
		if errors.Is(err, mesh.ErrTextTooLong) {
			reason = meshpb.Routing_TOO_LARGE
		}
		g.downlinkRefused(r, reason, err.Error())
		return false
	}
	r.to, r.channel, r.data, r.downlink = dl.To, dl.Channel, dl.Data, nil
	r.dl.wantAck = r.to != mesh.Broadcast
	return true
}

// rejectDownlink reports a JSON downlink request that was not queued.
func (g *Gateway) rejectDownlink(r *request, err error) {
	g.Stats.DownlinkRejected.Add(1)
	g.log.Warn("ignoring JSON downlink", "root", r.root, "request", r.id, "err", err)
	g.report(r, refusal(err), 0, err.Error())
}

// resolveDownlink turns a JSON downlink queued before the first handshake
// into a packet, now that the radio is known. It reports false when the
// request ended here: for another root, malformed or refused.
func (g *Gateway) resolveDownlink(r *request) bool {
	radio, root := g.currentRadio()
	if r.root != root {
		g.log.Debug("JSON downlink from before the handshake is for another root; not sent", "topic_root", r.root, "root", root)
		g.done(r)
		return false
	}
	if !g.parseDownlink(r, r.downlink, radio.myNum) {
		return false
	}
	if err := validate(r); err != nil {
		g.rejectDownlink(r, err)
		return false
	}
	g.downlinkQueued(r)
	return true
}

// onProxyDownlink passes envelopes from other gateways down to a radio in
// client proxy mode; the radio's own publications are not sent back to it.
func (g *Gateway) onProxyDownlink(topic string, payload []byte) {
	radio, _ := g.currentRadio()
	t, err := topics.Parse(topic)
	if radio == nil || err != nil || t.Gateway == radio.gatewayID() {
		return
	}
	m := &meshpb.MqttClientProxyMessage{Topic: topic, PayloadVariant: &meshpb.MqttClientProxyMessage_Data{Data: append([]byte(nil), payload...)}}
	// The stream API carries at most 512 bytes a frame; a larger one
	// cannot be written, and must not take the link down with it.
	if n := proto.Size(&meshpb.ToRadio{PayloadVariant: &meshpb.ToRadio_MqttClientProxyMessage{MqttClientProxyMessage: m}}); n > mesh.MaxFrame {
		g.Stats.ProxyOversize.Add(1)
		g.logProxyDrop(&g.proxyOversizeLogged, "client proxy message too large for the radio's 512-byte frames; not passed down",
			"topic", topic, "bytes", n, "dropped", g.Stats.ProxyOversize.Load())
		return
	}
	select {
	case g.proxyOut <- m:
	default:
		g.Stats.ProxyQueueFull.Add(1)
		g.logProxyDrop(&g.proxyFullLogged, "client proxy downlink queue full; dropping", "topic", topic, "dropped", g.Stats.ProxyQueueFull.Load())
	}
}

// proxyLogQuiet is how long drops of one kind must pause before the next
// is logged as a warning again.
const proxyLogQuiet = time.Minute

// logProxyDrop logs the first drop of a burst as a warning and the rest
// at debug level; last holds when a drop of this kind was last seen.
func (g *Gateway) logProxyDrop(last *atomic.Int64, msg string, args ...any) {
	now := time.Now().UnixNano()
	if prev := last.Swap(now); now-prev >= int64(proxyLogQuiet) {
		g.log.Warn(msg, args...)
		return
	}
	g.log.Debug(msg, args...)
}
