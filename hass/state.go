package hass

import (
	"cmp"
	"encoding/json"
	"hash/fnv"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// state is what the publisher knows and what it has announced. Only the
// loop touches it.
type state struct {
	cfg    Config
	bus    Bus
	log    *slog.Logger
	queued func() int // messages waiting in the loop's queue
	// births tells Run that Home Assistant started, so that it publishes
	// everything again after a random wait.
	births chan struct{}

	nodes    map[uint32]*node
	bridges  map[string]*bridge
	statuses map[string]topics.LinkState // by gateway id
	xmpps    map[string]*xmppSide        // by bare JID
	started  time.Time

	avail    string // the availability last published; "" before the first
	pending  int    // messages taken in since the last flush
	force    bool   // the next flush publishes everything, changed or not
	saveDue  bool   // the state directory is behind what is announced
	lastSave time.Time
}

// node is one mesh node, announced as a device.
type node struct {
	st    topics.HassNodeState
	heard time.Time
	// configs maps each discovery topic published for the node to a hash
	// of its payload; 0 for one published by an earlier run, whose payload
	// is not known.
	configs map[string]uint64
	dirty   bool // its state or its configs may have changed
}

// bridge is one radio side on the broker, announced as a device.
type bridge struct {
	id      string // gateway id
	radio   *topics.RadioRecord
	seen    bool // its status or radio record arrived in this run
	configs map[string]uint64
	dirty   bool
}

// xmppSide is one XMPP side on the broker, announced as a device of its
// own: it is not behind any one radio side (it sends through whichever is
// online on the mesh), and may run without one.
type xmppSide struct {
	jid     string // bare account JID
	seen    bool   // its status record arrived in this run
	configs map[string]uint64
	dirty   bool
}

// flushEvery bounds how many messages are taken in before what they
// changed is published, when the queue does not run empty meanwhile.
const flushEvery = 64

// plausibleSince is the earliest last-heard time taken from a node record:
// anything before comes from a radio whose clock was never set.
var plausibleSince = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

func newState(cfg Config, bus Bus, log *slog.Logger, queued func() int) *state {
	return &state{
		cfg: cfg, bus: bus, log: log, queued: queued, births: make(chan struct{}, 1),
		nodes: map[uint32]*node{}, bridges: map[string]*bridge{}, statuses: map[string]topics.LinkState{}, xmpps: map[string]*xmppSide{},
		started: cfg.Now(), lastSave: cfg.Now(),
	}
}

// settle ends the handling of one message: once the queue is empty (or
// after flushEvery messages) what changed is published, so a burst (the
// node records after a handshake) is published, and saved, once.
func (s *state) settle() {
	s.pending++
	if s.queued() == 0 || s.pending >= flushEvery {
		s.flush()
	}
}

// onStatus takes in a radio side's status record.
func (s *state) onStatus(topic string, payload []byte) {
	defer s.settle()
	id, ok := topics.StatusGateway(topic)
	if !ok {
		return
	}
	if len(payload) == 0 {
		// The radio side moved to another radio, or left for good.
		s.removeBridge(id, "its status record was removed")
		return
	}
	var rec topics.StatusRecord
	if err := json.Unmarshal(payload, &rec); err != nil {
		s.log.Debug("ignoring a status record that does not decode", "topic", topic, "err", err)
		return
	}
	s.bridge(id).seen = true
	s.statuses[id] = rec.State
}

// onXMPPStatus takes in an XMPP side's status record: its device, whose
// entities read the record itself, is announced once one arrives.
func (s *state) onXMPPStatus(topic string, payload []byte) {
	defer s.settle()
	jid, ok := topics.XMPPStatusJID(topic)
	if !ok {
		return
	}
	if len(payload) == 0 {
		s.removeXMPP(jid, "its status record was removed")
		return
	}
	rec, err := topics.ParseXMPPStatus(payload)
	if err != nil || rec.JID != jid {
		s.log.Debug("ignoring an XMPP status record that does not decode, or names another account", "topic", topic, "err", err)
		return
	}
	s.xmppSide(jid).seen = true
}

// xmppSide returns the XMPP side of a bare JID, adding it when new.
func (s *state) xmppSide(jid string) *xmppSide {
	x := s.xmpps[jid]
	if x == nil {
		x = &xmppSide{jid: jid, configs: map[string]uint64{}, dirty: true}
		s.xmpps[jid] = x
	}
	return x
}

// onRadio takes in a radio side's radio record: the bridge device's
// firmware, and the channels its text entities send on.
func (s *state) onRadio(topic string, payload []byte) {
	defer s.settle()
	id, ok := topics.RadioGateway(topic)
	if !ok {
		return
	}
	if len(payload) == 0 {
		if b := s.bridges[id]; b != nil && b.radio != nil {
			b.radio, b.dirty = nil, true
			s.touchVia(id)
		}
		return
	}
	var rec topics.RadioRecord
	if err := json.Unmarshal(payload, &rec); err != nil {
		s.log.Debug("ignoring a radio record that does not decode", "topic", topic, "err", err)
		return
	}
	b := s.bridge(id)
	b.seen = true
	if b.radio == nil || !sameRadio(*b.radio, rec) {
		b.radio, b.dirty = &rec, true
		s.touchVia(id)
	}
}

func sameRadio(a, b topics.RadioRecord) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// touchVia marks the nodes heard through a radio side, whose direct
// message entity depends on its radio.
func (s *state) touchVia(id string) {
	for _, n := range s.nodes {
		if n.st.Via == id {
			n.dirty = true
		}
	}
}

// bridge returns the bridge of a gateway id, adding it when new.
func (s *state) bridge(id string) *bridge {
	b := s.bridges[id]
	if b == nil {
		b = &bridge{id: id, configs: map[string]uint64{}, dirty: true}
		s.bridges[id] = b
		// A node heard before its radio side was known hangs off it now.
		for _, n := range s.nodes {
			if n.st.Via == "" {
				n.st.Via, n.dirty = id, true
			}
		}
	}
	return b
}

// onNode takes in a node record: names and hardware, and when the radio
// last heard the node. A node the bridge has not announced is announced
// from its record when the radio heard it within the expiry.
func (s *state) onNode(topic string, payload []byte) {
	defer s.settle()
	id, ok := topics.NodeID(topic)
	if !ok || len(payload) == 0 {
		return
	}
	var rec topics.NodeRecord
	if err := json.Unmarshal(payload, &rec); err != nil {
		s.log.Debug("ignoring a node record that does not decode", "topic", topic, "err", err)
		return
	}
	num := rec.Num
	if num == 0 {
		n, err := mesh.ParseNodeID(id)
		if err != nil {
			return
		}
		num = n
	}
	now := s.cfg.Now()
	var heard time.Time
	if rec.LastHeard != 0 {
		heard = time.Unix(int64(rec.LastHeard), 0)
		if heard.Before(plausibleSince) {
			heard = time.Time{}
		} else if heard.After(now) {
			heard = now // the radio's clock is ahead
		}
	}
	n := s.nodes[num]
	if n == nil {
		// Heard only through MQTT: not a node of this mesh.
		if heard.IsZero() || now.Sub(heard) > s.cfg.Expire || rec.ViaMQTT {
			return
		}
		if n = s.add(num, heard); n == nil {
			return
		}
	}
	before := n.st
	setIf(&n.st.LongName, rec.LongName)
	setIf(&n.st.ShortName, rec.ShortName)
	setIf(&n.st.HWModel, rec.HWModel)
	setIf(&n.st.Role, rec.Role)
	if heard.After(n.heard) {
		n.setHeard(heard)
	}
	if !sameState(before, n.st) {
		n.dirty = true
	}
}

func setIf(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}

func sameState(a, b topics.HassNodeState) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// lastHeardLayout is RFC 3339 with the UTC offset written out, which
// every parser of ISO 8601 takes.
const lastHeardLayout = "2006-01-02T15:04:05+00:00"

func (n *node) setHeard(t time.Time) {
	n.heard = t
	n.st.LastHeard = t.UTC().Format(lastHeardLayout)
}

// add starts announcing a node heard at heard. When MaxNodes are
// announced already, the one heard least recently makes room, unless it
// was heard more recently than this one: then nil.
func (s *state) add(num uint32, heard time.Time) *node {
	if len(s.nodes) >= s.cfg.MaxNodes {
		var oldest *node
		for _, n := range s.nodes {
			if oldest == nil || n.heard.Before(oldest.heard) {
				oldest = n
			}
		}
		if !oldest.heard.Before(heard) {
			return nil
		}
		s.removeNode(oldest, "making room for a node heard more recently", "max_nodes", s.cfg.MaxNodes)
	}
	n := &node{st: topics.HassNodeState{ID: mesh.NodeID(num), Num: num}, configs: map[string]uint64{}, dirty: true}
	n.setHeard(heard)
	if len(s.bridges) == 1 {
		for id := range s.bridges {
			n.st.Via = id
		}
	}
	s.nodes[num] = n
	s.log.Debug("announcing a node to Home Assistant", "node", n.st.ID)
	return n
}

// onPacket takes in a packet a radio heard: the node was heard now, with
// the packet's signal, and what it carries (telemetry, a position, its
// names).
func (s *state) onPacket(_ string, payload []byte) {
	defer s.settle()
	var env meshpb.ServiceEnvelope
	if err := proto.Unmarshal(payload, &env); err != nil {
		return
	}
	p := env.GetPacket()
	// A packet that reached the radio through MQTT comes from beyond the
	// local mesh: its signal is not the node's, and such nodes may be
	// countless.
	if p == nil || p.GetFrom() == 0 || p.GetViaMqtt() {
		return
	}
	gw := env.GetGatewayId()
	n := s.nodes[p.GetFrom()]
	now := s.cfg.Now()
	if n == nil {
		if n = s.add(p.GetFrom(), now); n == nil {
			return
		}
	}
	n.dirty = true
	n.setHeard(now)
	if gw != "" && (n.st.Via == "" || s.bridges[n.st.Via] == nil) {
		n.st.Via = gw
	}
	// The radio's own packets have no signal or hops: it sent them.
	if own := gw == n.st.ID; !own {
		if rssi := p.GetRxRssi(); rssi != 0 {
			n.st.RSSI = &rssi
			n.st.SNR = float(p.GetRxSnr())
		}
		// hop_start 0 is only trusted from firmware that sets the bitfield
		// (2.3 on); older firmware never set hop_start.
		hasBitfield := p.GetDecoded() != nil && p.GetDecoded().Bitfield != nil
		if start, limit := p.GetHopStart(), p.GetHopLimit(); (start != 0 || hasBitfield) && start >= limit {
			hops := start - limit
			n.st.HopsAway = &hops
		}
	}
	d := p.GetDecoded()
	switch d.GetPortnum() {
	case meshpb.PortNum_TELEMETRY_APP:
		var t meshpb.Telemetry
		if proto.Unmarshal(d.GetPayload(), &t) == nil {
			n.takeTelemetry(&t)
		}
	case meshpb.PortNum_POSITION_APP:
		var pos meshpb.Position
		if proto.Unmarshal(d.GetPayload(), &pos) == nil {
			n.takePosition(&pos)
		}
	case meshpb.PortNum_NODEINFO_APP:
		var u meshpb.User
		if proto.Unmarshal(d.GetPayload(), &u) == nil {
			setIf(&n.st.LongName, u.GetLongName())
			setIf(&n.st.ShortName, u.GetShortName())
			n.st.HWModel, n.st.Role = u.GetHwModel().String(), u.GetRole().String()
		}
	}
}

func (n *node) takeTelemetry(t *meshpb.Telemetry) {
	if m := t.GetDeviceMetrics(); m != nil {
		if m.BatteryLevel != nil {
			v := m.GetBatteryLevel()
			n.st.BatteryLevel = &v
		}
		if m.UptimeSeconds != nil {
			v := m.GetUptimeSeconds()
			n.st.UptimeSeconds = &v
		}
		takeFloat(&n.st.Voltage, m.Voltage)
		takeFloat(&n.st.ChannelUtilization, m.ChannelUtilization)
		takeFloat(&n.st.AirUtilTX, m.AirUtilTx)
	}
	if m := t.GetEnvironmentMetrics(); m != nil {
		takeFloat(&n.st.Temperature, m.Temperature)
		takeFloat(&n.st.RelativeHumidity, m.RelativeHumidity)
		takeFloat(&n.st.BarometricPressure, m.BarometricPressure)
		if m.Iaq != nil {
			v := m.GetIaq()
			n.st.IAQ = &v
		}
	}
}

// takeFloat keeps a metric the node sent; NaN and infinities, which no
// JSON can carry, are not kept.
func takeFloat(dst **float64, v *float32) {
	if v != nil {
		if f := float(*v); f != nil {
			*dst = f
		}
	}
}

// float converts a float32 to the float64 with the same shortest decimal
// form, so 3.9 reads 3.9 and not 3.9000000953674316.
func float(v float32) *float64 {
	if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
		return nil
	}
	f, _ := strconv.ParseFloat(strconv.FormatFloat(float64(v), 'g', -1, 32), 64)
	return &f
}

func (n *node) takePosition(p *meshpb.Position) {
	// No fix: the firmware sends 0, 0 or leaves them out.
	if p.LatitudeI == nil || p.LongitudeI == nil || (p.GetLatitudeI() == 0 && p.GetLongitudeI() == 0) {
		return
	}
	lat, lon := float64(p.GetLatitudeI())/1e7, float64(p.GetLongitudeI())/1e7
	acc := GPSAccuracy(p.GetPrecisionBits())
	n.st.Latitude, n.st.Longitude, n.st.GPSAccuracy = &lat, &lon, &acc
	n.st.Altitude = nil
	if p.Altitude != nil {
		alt := p.GetAltitude()
		n.st.Altitude = &alt
	}
	n.st.PrecisionBits = nil
	if bits := p.GetPrecisionBits(); bits != 0 {
		n.st.PrecisionBits = &bits
	}
}

// metresPerDegree is the length of a degree of longitude at the equator
// (WGS 84), the longest a degree gets.
const metresPerDegree = 111320.0

// GPSAccuracy is the gps_accuracy, in metres, of a position sent with
// precisionBits bits of precision. The firmware keeps the top bits of the
// coordinates (in units of 1e-7 degree) and moves the position to the
// middle of the cell they leave, 2^(32-bits) units wide: the position is
// off by at most half of that, 2^(32-bits) x 1e-7 x 111,320 m / 2 (14 bits:
// 1,459 m). Full precision (32, or 0 from firmware that does not say) is 0.
func GPSAccuracy(precisionBits uint32) float64 {
	if precisionBits == 0 || precisionBits >= 32 {
		return 0
	}
	cell := math.Ldexp(1, int(32-precisionBits)) * 1e-7 * metresPerDegree
	return math.Round(cell / 2)
}

// onHomeAssistant takes in Home Assistant's status: when it announces its
// start, everything is published again (after a random wait, in Run), in
// case the broker lost what it had retained.
func (s *state) onHomeAssistant(_ string, payload []byte) {
	if string(payload) != topics.HassOnline {
		return
	}
	select {
	case s.births <- struct{}{}:
	default:
	}
}

// sweep removes the nodes not heard for the expiry, and the radio and
// XMPP sides kept from an earlier run that have not come back within it,
// and saves the latest states now and then.
func (s *state) sweep() {
	defer s.settle()
	now := s.cfg.Now()
	for _, n := range s.sortedNodes() {
		if since := now.Sub(n.heard); since > s.cfg.Expire {
			s.removeNode(n, "not heard for longer than the expiry", "last_heard", n.st.LastHeard, "expire", s.cfg.Expire)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(s.bridges)) {
		if b := s.bridges[id]; !b.seen && now.Sub(s.started) > s.cfg.Expire {
			s.removeBridge(id, "not back within the expiry")
		}
	}
	for _, jid := range slices.Sorted(maps.Keys(s.xmpps)) {
		if !s.xmpps[jid].seen && now.Sub(s.started) > s.cfg.Expire {
			s.removeXMPP(jid, "not back within the expiry")
		}
	}
	if s.saveDue && now.Sub(s.lastSave) >= s.cfg.SaveInterval {
		s.save()
	}
}

// republish publishes everything again.
func (s *state) republish() {
	s.force = true
	s.flush()
}

// restore runs once the subscriptions are in place.
func (s *state) restore() {
	s.log.Info("announcing the mesh to Home Assistant", "prefix", s.cfg.Prefix, "nodes", len(s.nodes), "expire", s.cfg.Expire)
	// What was loaded is published by this flush, if a retained record did
	// not bring one earlier: its payload hashes are unknown.
	s.flush()
}

// stop runs last: nobody keeps the entities up to date from now on.
func (s *state) stop() {
	s.flush()
	s.publish(topics.HassAvailability, []byte(topics.HassOffline))
	s.avail = topics.HassOffline
	s.save()
}

func (s *state) removeNode(n *node, why string, args ...any) {
	for _, t := range slices.Sorted(maps.Keys(n.configs)) {
		s.publish(t, nil)
	}
	s.publish(topics.HassNode(n.st.ID), nil)
	delete(s.nodes, n.st.Num)
	s.saveDue = true
	s.log.Info("removing a node from Home Assistant: "+why, append([]any{"node", n.st.ID}, args...)...)
}

func (s *state) removeBridge(id, why string) {
	delete(s.statuses, id)
	b := s.bridges[id]
	if b == nil {
		return
	}
	for _, t := range slices.Sorted(maps.Keys(b.configs)) {
		s.publish(t, nil)
	}
	delete(s.bridges, id)
	s.touchVia(id)
	s.saveDue = true
	s.log.Info("removing a radio side from Home Assistant: "+why, "gateway", id)
}

func (s *state) removeXMPP(jid, why string) {
	x := s.xmpps[jid]
	if x == nil {
		return
	}
	for _, t := range slices.Sorted(maps.Keys(x.configs)) {
		s.publish(t, nil)
	}
	delete(s.xmpps, jid)
	s.saveDue = true
	s.log.Info("removing an XMPP side from Home Assistant: "+why, "jid", jid)
}

func (s *state) sortedNodes() []*node {
	out := slices.Collect(maps.Values(s.nodes))
	slices.SortFunc(out, func(a, b *node) int { return cmp.Compare(a.st.Num, b.st.Num) })
	return out
}

type message struct {
	topic   string
	payload []byte
}

// flush publishes what changed: the discovery configs of the devices
// that changed (and empty ones for entities no longer announced), their
// states, and the availability. A config topic never announced before is
// written to the state directory first, so a crash cannot leave one the
// bridge does not know to remove.
func (s *state) flush() {
	s.pending = 0
	var out []message
	added := false
	for _, id := range slices.Sorted(maps.Keys(s.bridges)) {
		b := s.bridges[id]
		if !b.dirty && !s.force {
			continue
		}
		b.dirty = false
		msgs, a := diff(b.configs, s.bridgeConfigs(b), s.force)
		out, added = append(out, msgs...), added || a
	}
	for _, jid := range slices.Sorted(maps.Keys(s.xmpps)) {
		x := s.xmpps[jid]
		if !x.dirty && !s.force {
			continue
		}
		x.dirty = false
		msgs, a := diff(x.configs, s.xmppConfigs(x), s.force)
		out, added = append(out, msgs...), added || a
	}
	for _, n := range s.sortedNodes() {
		if !n.dirty && !s.force {
			continue
		}
		n.dirty = false
		msgs, a := diff(n.configs, s.nodeConfigs(n), s.force)
		out, added = append(out, msgs...), added || a
		b, err := json.Marshal(n.st)
		if err != nil {
			s.log.Error("encoding a node's state", "node", n.st.ID, "err", err)
			continue
		}
		out = append(out, message{topics.HassNode(n.st.ID), b})
		s.saveDue = true
	}
	if added {
		s.save()
	}
	for _, m := range out {
		s.publish(m.topic, m.payload)
	}
	avail := topics.HassOffline
	for _, st := range s.statuses {
		if st == topics.LinkOnline {
			avail = topics.HassOnline
		}
	}
	if avail != s.avail || s.force {
		s.publish(topics.HassAvailability, []byte(avail))
		s.avail = avail
	}
	s.force = false
}

// diff brings published (topic -> payload hash) to want: it returns the
// messages that publish what is new or changed (everything when force)
// and remove what is no longer wanted, and whether a topic is new.
func diff(published map[string]uint64, want map[string][]byte, force bool) (out []message, added bool) {
	for _, t := range slices.Sorted(maps.Keys(want)) {
		h := hash(want[t])
		old, ok := published[t]
		if !ok {
			added = true
		}
		if force || !ok || old != h {
			out = append(out, message{t, want[t]})
			published[t] = h
		}
	}
	for _, t := range slices.Sorted(maps.Keys(published)) {
		if _, ok := want[t]; !ok {
			out = append(out, message{t, nil})
			delete(published, t)
		}
	}
	return out, added
}

func hash(b []byte) uint64 {
	h := fnv.New64a()
	h.Write(b)
	if v := h.Sum64(); v != 0 {
		return v
	}
	return 1 // 0 stands for "payload unknown"
}

// publish publishes retained; nil removes the retained message.
func (s *state) publish(topic string, payload []byte) {
	if err := s.bus.Publish(topic, payload, true); err != nil {
		s.log.Warn("publish failed", "topic", topic, "err", err)
	}
}
