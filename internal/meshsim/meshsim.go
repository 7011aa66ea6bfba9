// Package meshsim is a simulated Meshtastic radio. It speaks the stream API
// at the protocol level (the config handshake, heartbeats answered with
// QueueStatus, the firmware's 2 s text rule) over any byte stream: a
// pseudo-terminal, a TCP socket. A few named nodes talk on timers, so the
// bridge can be run and demonstrated with no hardware, and tests drive the
// real code path of the radio link through it.
package meshsim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
)

// Peer is a simulated node elsewhere on the mesh.
type Peer struct {
	Num       uint32
	LongName  string
	ShortName string
	Texts     []string // what it says, in turn
}

// Config describes the simulated radio.
type Config struct {
	NodeNum   uint32
	LongName  string
	ShortName string
	Region    meshpb.Config_LoRaConfig_RegionCode
	Preset    meshpb.Config_LoRaConfig_ModemPreset
	HopLimit  uint32
	Peers     []Peer
	// TrafficInterval is how often each peer sends something (text,
	// position, telemetry or nodeinfo); 0 keeps the peers quiet.
	TrafficInterval time.Duration
	// TextRule is the firmware's minimum spacing of texts from the API;
	// closer texts are dropped with a RATE_LIMIT_EXCEEDED NAK.
	TextRule time.Duration
	// ClientProxy makes the radio publish MQTT through its client.
	ClientProxy bool
	// NoQueueStatus behaves like firmware older than flow control: no
	// QueueStatus is ever sent.
	NoQueueStatus bool
	// DutyWindow is the rolling window of the region's duty cycle, an hour
	// on the real firmware; a packet that would exceed the region's share of
	// it is refused with DUTY_CYCLE_LIMIT.
	DutyWindow time.Duration
	// Position is the radio's own position, sent with its own node in the
	// handshake; nil for a radio that has none.
	Position *meshpb.Position
	// ReportLocation is the radio's consent to put its position in map
	// reports (the MQTT module's map_report_settings).
	ReportLocation bool
	// Uplink enables MQTT uplink on the primary channel, and JSON the MQTT
	// module's JSON output, as an owner does for a public broker.
	Uplink, JSON bool
	// AnswerDirect, when set, is how the mesh answers a direct message
	// the client sends with want_ack, right after the radio takes it:
	// NONE is the destination's acknowledgement (from the destination),
	// any other reason the radio giving up on it (from the radio itself,
	// as MAX_RETRANSMIT after its retransmissions); ok false answers
	// nothing, as an unreachable mesh with the radio still retrying.
	AnswerDirect func(p *meshpb.MeshPacket) (reason meshpb.Routing_Error, ok bool)
}

// Demo is the configuration `--device sim` runs with.
func Demo() Config {
	return Config{
		NodeNum: 0x5eed0001, LongName: "SovereignRelay Sim", ShortName: "SIM",
		Region: meshpb.Config_LoRaConfig_EU_868, Preset: meshpb.Config_LoRaConfig_LONG_FAST, HopLimit: 3,
		Peers: []Peer{
			{Num: 0xa1b2c3d4, LongName: "Ana's T-Beam", ShortName: "ANA", Texts: []string{"Good morning from the ridge 🌄", "Water pump is running again", "Anyone heading to the market?"}},
			{Num: 0x0badcafe, LongName: "Mill Road Repeater", ShortName: "MILL", Texts: []string{"Repeater battery at 80%", "Solar panel cleaned"}},
			{Num: 0x13572468, LongName: "Kofi", ShortName: "KOFI", Texts: []string{"On my way 🚲", "The bridge is open, river is low", "谢谢 — see you at six"}},
		},
		TrafficInterval: 20 * time.Second,
		TextRule:        2 * time.Second,
	}
}

// Radio is the simulated radio. One client at a time, like the firmware's
// TCP API: a new connection replaces the old one.
type Radio struct {
	cfg Config

	mu          sync.Mutex
	num         uint32 // the node number, cfg.NodeNum until SetNodeNum changes it
	client      *conn
	received    []*meshpb.MeshPacket // accepted from the client
	rateLimited int
	handshakes  int
	lastText    time.Time
	changed     chan struct{} // closed and replaced on every change tests may wait for
	rebootCount uint32
	proxyIn     []*meshpb.MqttClientProxyMessage // client proxy downlink received
	ignoreCfg   int                              // want_config requests still to ignore
	duty        *mesh.AirtimeBudget
	params      mesh.LoRaParams
	dutyLimited int
	recentIDs   []uint32 // the last ids taken from the client: the firmware drops a repeat
	// answer is SetAnswerDirect's; nil leaves it to cfg.AnswerDirect.
	answer func(p *meshpb.MeshPacket) (meshpb.Routing_Error, bool)
}

// New makes a simulated radio.
func New(cfg Config) *Radio {
	if cfg.HopLimit == 0 {
		cfg.HopLimit = 3
	}
	if cfg.DutyWindow == 0 {
		cfg.DutyWindow = time.Hour
	}
	params, _ := mesh.LoRaParamsOf(&meshpb.Config_LoRaConfig{UsePreset: true, ModemPreset: cfg.Preset, Region: cfg.Region})
	allowance := time.Duration(float64(cfg.DutyWindow) * mesh.DutyCycle(cfg.Region))
	return &Radio{cfg: cfg, num: cfg.NodeNum, changed: make(chan struct{}), params: params, duty: mesh.NewAirtimeBudget(cfg.DutyWindow, allowance)}
}

// Config returns the radio's configuration, with its node number as it
// is now.
func (r *Radio) Config() Config {
	cfg := r.cfg
	cfg.NodeNum = r.nodeNum()
	return cfg
}

// nodeNum is the radio's node number as it is now.
func (r *Radio) nodeNum() uint32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.num
}

// SetNodeNum gives the radio another node number from its next handshake
// on, as when another radio is plugged into the same port: a client learns
// of it only by asking for the configuration again.
func (r *Radio) SetNodeNum(num uint32) {
	r.mu.Lock()
	r.num = num
	r.mu.Unlock()
}

// conn is one client connection.
type conn struct {
	rw            io.ReadWriter
	wmu           sync.Mutex
	sending       atomic.Bool // config complete: live packets flow
	free          uint32
	noQueueStatus bool
}

const txQueueLen = 16

func (c *conn) writeMsg(m *meshpb.FromRadio) error {
	if c.noQueueStatus && m.GetQueueStatus() != nil {
		return nil
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	f, err := mesh.AppendFrame(nil, b)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err = c.rw.Write(f)
	return err
}

func (c *conn) writeRaw(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.rw.Write(b)
	return err
}

func (r *Radio) notify() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// Changed returns a channel closed at the next change of what the radio
// received or of its handshake count.
func (r *Radio) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// Serve speaks the stream API on rw until ctx ends or rw fails. Like a
// booting radio it prints console text until the client first talks to it.
//
// Serve returns only after the goroutines it started have stopped. When ctx
// ends it stops them by giving rw a deadline in the past if rw has
// SetDeadline (a net.Conn); any other rw (a pseudo-terminal) must then fail,
// be closed or hung up, for Serve to return.
func (r *Radio) Serve(ctx context.Context, rw io.ReadWriter) error {
	c := &conn{rw: rw, free: txQueueLen, noQueueStatus: r.cfg.NoQueueStatus}
	r.mu.Lock()
	r.client = c
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		if r.client == c {
			r.client = nil
		}
		r.mu.Unlock()
	}()
	_ = c.writeRaw([]byte("INFO  | ??:??:?? 0 \n\nBooting SovereignRelay simulated radio\r\nINFO  | ??:??:?? 0 [Main] Serial console ready\r\n"))

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A read or write blocked on rw would otherwise outlive ctx.
	wg.Go(func() {
		<-ctx.Done()
		if d, ok := rw.(interface{ SetDeadline(time.Time) error }); ok {
			_ = d.SetDeadline(time.Unix(1, 0))
		}
	})
	if r.cfg.TrafficInterval > 0 {
		wg.Go(func() { r.talk(ctx, c) })
	}

	var last *meshpb.ToRadio
	fr := mesh.NewFrameReader(rw, func(p []byte) bool {
		m := new(meshpb.ToRadio)
		if proto.Unmarshal(p, m) != nil || m.GetPayloadVariant() == nil {
			return false
		}
		last = m
		return true
	})
	errc := make(chan error, 1)
	wg.Go(func() {
		for {
			item, err := fr.Next()
			if err != nil {
				errc <- err
				return
			}
			if item.Frame == nil && item.Log != "" {
				continue // wake bytes and noise
			}
			if err := r.handle(c, last); err != nil {
				errc <- err
				return
			}
		}
	})
	select {
	case <-ctx.Done():
		return ctx.Err()
	case err := <-errc:
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
}

func (r *Radio) handle(c *conn, m *meshpb.ToRadio) error {
	switch v := m.GetPayloadVariant().(type) {
	case *meshpb.ToRadio_WantConfigId:
		r.mu.Lock()
		ignore := r.ignoreCfg > 0
		if ignore {
			r.ignoreCfg--
		}
		r.mu.Unlock()
		if ignore {
			return nil
		}
		c.sending.Store(false)
		if err := r.sendConfig(c, v.WantConfigId); err != nil {
			return err
		}
		r.mu.Lock()
		r.handshakes++
		r.notify()
		r.mu.Unlock()
		c.sending.Store(true)
	case *meshpb.ToRadio_Heartbeat:
		if !c.sending.Load() || v.Heartbeat.GetNonce() == 1 {
			return nil // the firmware broadcasts its NodeInfo instead
		}
		return c.writeMsg(&meshpb.FromRadio{PayloadVariant: &meshpb.FromRadio_QueueStatus{QueueStatus: &meshpb.QueueStatus{Free: c.free, Maxlen: txQueueLen}}})
	case *meshpb.ToRadio_Packet:
		return r.onPacket(c, v.Packet)
	case *meshpb.ToRadio_Disconnect:
		c.sending.Store(false)
	case *meshpb.ToRadio_MqttClientProxyMessage:
		if !c.sending.Load() || !r.cfg.ClientProxy {
			return nil
		}
		r.mu.Lock()
		r.proxyIn = append(r.proxyIn, v.MqttClientProxyMessage)
		r.notify()
		r.mu.Unlock()
	}
	return nil
}

// onPacket takes a packet from the client, applying the firmware's rules.
func (r *Radio) onPacket(c *conn, p *meshpb.MeshPacket) error {
	if !c.sending.Load() {
		return nil
	}
	qs := &meshpb.QueueStatus{Free: c.free, Maxlen: txQueueLen, MeshPacketId: p.GetId()}
	r.mu.Lock()
	repeat := slices.Contains(r.recentIDs, p.GetId())
	if !repeat {
		r.recentIDs = append(r.recentIDs, p.GetId())
		if len(r.recentIDs) > 20 {
			r.recentIDs = r.recentIDs[1:]
		}
	}
	r.mu.Unlock()
	if repeat {
		// Already sent: the firmware does not send it again.
		return c.writeMsg(&meshpb.FromRadio{PayloadVariant: &meshpb.FromRadio_QueueStatus{QueueStatus: qs}})
	}
	if p.GetDecoded().GetPortnum() == meshpb.PortNum_TEXT_MESSAGE_APP {
		r.mu.Lock()
		now := time.Now()
		limited := !r.lastText.IsZero() && now.Sub(r.lastText) < r.cfg.TextRule
		if limited {
			r.rateLimited++
			r.notify()
		} else {
			r.lastText = now
		}
		r.mu.Unlock()
		if limited {
			if err := c.writeMsg(&meshpb.FromRadio{PayloadVariant: &meshpb.FromRadio_QueueStatus{QueueStatus: qs}}); err != nil {
				return err
			}
			return c.writeMsg(packetMsg(r.routingReply(p.GetId(), meshpb.Routing_RATE_LIMIT_EXCEEDED)))
		}
	}
	// The firmware's hard duty-cycle stop: a packet that would take the
	// hour's transmit time over the region's limit is aborted.
	now := time.Now()
	cost := mesh.TimeOnAir(r.params, 16+proto.Size(p.GetDecoded())+2)
	r.mu.Lock()
	overBudget := r.duty.Wait(now, cost) > 0
	if overBudget {
		r.dutyLimited++
		r.notify()
	} else {
		r.duty.Spend(now, cost)
	}
	r.mu.Unlock()
	if overBudget {
		if err := c.writeMsg(&meshpb.FromRadio{PayloadVariant: &meshpb.FromRadio_QueueStatus{QueueStatus: qs}}); err != nil {
			return err
		}
		return c.writeMsg(packetMsg(r.routingReply(p.GetId(), meshpb.Routing_DUTY_CYCLE_LIMIT)))
	}
	r.mu.Lock()
	cp := proto.CloneOf(p)
	cp.From = r.num // the firmware overwrites from
	r.received = append(r.received, cp)
	r.notify()
	r.mu.Unlock()
	if err := c.writeMsg(&meshpb.FromRadio{PayloadVariant: &meshpb.FromRadio_QueueStatus{QueueStatus: qs}}); err != nil {
		return err
	}
	r.mu.Lock()
	answer := r.answer
	r.mu.Unlock()
	if answer == nil {
		answer = r.cfg.AnswerDirect
	}
	if answer == nil || !p.GetWantAck() || p.GetTo() == mesh.Broadcast {
		return nil
	}
	reason, ok := answer(proto.CloneOf(cp))
	if !ok {
		return nil
	}
	reply := r.routingReply(p.GetId(), reason)
	if reason == meshpb.Routing_NONE {
		reply.From = p.GetTo() // a real acknowledgement comes from the destination
	}
	return c.writeMsg(packetMsg(reply))
}

func (r *Radio) routingReply(requestID uint32, reason meshpb.Routing_Error) *meshpb.MeshPacket {
	payload, _ := proto.Marshal(&meshpb.Routing{Variant: &meshpb.Routing_ErrorReason{ErrorReason: reason}})
	num := r.nodeNum()
	return &meshpb.MeshPacket{
		From: num, To: num, Id: rand.Uint32(),
		PayloadVariant: &meshpb.MeshPacket_Decoded{Decoded: &meshpb.Data{Portnum: meshpb.PortNum_ROUTING_APP, Payload: payload, RequestId: requestID}},
	}
}

func packetMsg(p *meshpb.MeshPacket) *meshpb.FromRadio {
	return &meshpb.FromRadio{PayloadVariant: &meshpb.FromRadio_Packet{Packet: p}}
}

// sendConfig sends the configuration dump in the firmware's order.
func (r *Radio) sendConfig(c *conn, nonce uint32) error {
	cfg := r.Config()
	r.mu.Lock()
	reboots := r.rebootCount
	r.mu.Unlock()
	msgs := []*meshpb.FromRadio{
		{PayloadVariant: &meshpb.FromRadio_MyInfo{MyInfo: &meshpb.MyNodeInfo{MyNodeNum: cfg.NodeNum, RebootCount: reboots, NodedbCount: uint32(len(cfg.Peers) + 1)}}},
		{PayloadVariant: &meshpb.FromRadio_NodeInfo{NodeInfo: &meshpb.NodeInfo{Num: cfg.NodeNum, User: user(cfg.NodeNum, cfg.LongName, cfg.ShortName), Position: cfg.Position, IsFavorite: true}}},
		{PayloadVariant: &meshpb.FromRadio_Metadata{Metadata: &meshpb.DeviceMetadata{FirmwareVersion: "2.7.26.sim", HwModel: meshpb.HardwareModel_PORTDUINO, HasPKC: true}}},
	}
	for i := int32(0); i < 8; i++ {
		ch := &meshpb.Channel{Index: i, Settings: &meshpb.ChannelSettings{}}
		if i == 0 {
			ch.Role = meshpb.Channel_PRIMARY
			ch.Settings.Psk = []byte{1}
			ch.Settings.UplinkEnabled = cfg.ClientProxy || cfg.Uplink
			ch.Settings.DownlinkEnabled = cfg.ClientProxy
		}
		msgs = append(msgs, &meshpb.FromRadio{PayloadVariant: &meshpb.FromRadio_Channel{Channel: ch}})
	}
	msgs = append(msgs,
		&meshpb.FromRadio{PayloadVariant: &meshpb.FromRadio_Config{Config: &meshpb.Config{PayloadVariant: &meshpb.Config_Lora{Lora: &meshpb.Config_LoRaConfig{
			UsePreset: true, ModemPreset: cfg.Preset, Region: cfg.Region, HopLimit: cfg.HopLimit, TxEnabled: true,
		}}}}},
		&meshpb.FromRadio{PayloadVariant: &meshpb.FromRadio_ModuleConfig{ModuleConfig: &meshpb.ModuleConfig{PayloadVariant: &meshpb.ModuleConfig_Mqtt{Mqtt: &meshpb.ModuleConfig_MQTTConfig{
			Enabled: cfg.ClientProxy, ProxyToClientEnabled: cfg.ClientProxy, EncryptionEnabled: true, Root: "msh/" + cfg.Region.String(), Address: "127.0.0.1",
			MapReportSettings: &meshpb.ModuleConfig_MapReportSettings{ShouldReportLocation: cfg.ReportLocation},
			JsonEnabled:       cfg.JSON, //lint:ignore SA1019 a 2.7 radio still has it
		}}}}},
	)
	now := uint32(time.Now().Unix())
	for _, p := range cfg.Peers {
		msgs = append(msgs, &meshpb.FromRadio{PayloadVariant: &meshpb.FromRadio_NodeInfo{NodeInfo: &meshpb.NodeInfo{
			Num: p.Num, User: user(p.Num, p.LongName, p.ShortName), LastHeard: now - 60, Snr: 6.25,
		}}})
	}
	msgs = append(msgs, &meshpb.FromRadio{PayloadVariant: &meshpb.FromRadio_ConfigCompleteId{ConfigCompleteId: nonce}})
	for _, m := range msgs {
		if err := c.writeMsg(m); err != nil {
			return err
		}
	}
	return nil
}

func user(num uint32, long, short string) *meshpb.User {
	return &meshpb.User{Id: mesh.NodeID(num), LongName: long, ShortName: short, HwModel: meshpb.HardwareModel_TBEAM}
}

// Inject delivers a packet to the client as if the radio had heard it. It
// reports false when no client is ready to receive packets.
func (r *Radio) Inject(p *meshpb.MeshPacket) bool {
	r.mu.Lock()
	c := r.client
	r.mu.Unlock()
	if c == nil || !c.sending.Load() {
		return false
	}
	if err := c.writeMsg(packetMsg(p)); err != nil {
		return false
	}
	if r.cfg.ClientProxy {
		// A radio in client proxy mode also hands its MQTT uplink of the
		// packet to the client.
		gw := mesh.NodeID(r.nodeNum())
		env, _ := proto.Marshal(&meshpb.ServiceEnvelope{Packet: p, ChannelId: mesh.PresetName(r.cfg.Preset), GatewayId: gw})
		topic := "msh/" + r.cfg.Region.String() + "/2/e/" + mesh.PresetName(r.cfg.Preset) + "/" + gw
		m := &meshpb.MqttClientProxyMessage{Topic: topic, PayloadVariant: &meshpb.MqttClientProxyMessage_Data{Data: env}}
		return c.writeMsg(&meshpb.FromRadio{PayloadVariant: &meshpb.FromRadio_MqttClientProxyMessage{MqttClientProxyMessage: m}}) == nil
	}
	return true
}

// Mute makes the radio fall silent the way the firmware does after its API
// idle timeout or a reboot that the client missed: it answers nothing until
// it is asked for its configuration again.
func (r *Radio) Mute() {
	r.mu.Lock()
	c := r.client
	r.mu.Unlock()
	if c != nil {
		c.sending.Store(false)
	}
}

// IgnoreConfigRequests makes the radio ignore the next n want_config
// requests, like a radio too busy or too slow to answer.
func (r *Radio) IgnoreConfigRequests(n int) {
	r.mu.Lock()
	r.ignoreCfg = n
	r.mu.Unlock()
}

// ProxyReceived returns the client proxy messages the client sent down.
func (r *Radio) ProxyReceived() []*meshpb.MqttClientProxyMessage {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*meshpb.MqttClientProxyMessage(nil), r.proxyIn...)
}

// WriteRaw writes bytes to the client as they are: noise, torn frames, log text.
func (r *Radio) WriteRaw(b []byte) bool {
	r.mu.Lock()
	c := r.client
	r.mu.Unlock()
	return c != nil && c.writeRaw(b) == nil
}

// Reboot makes the radio behave as after a reboot: it announces it and sends
// nothing more until the client asks for the configuration again.
func (r *Radio) Reboot() bool {
	r.mu.Lock()
	c := r.client
	r.rebootCount++
	r.mu.Unlock()
	if c == nil {
		return false
	}
	c.sending.Store(false)
	return c.writeMsg(&meshpb.FromRadio{PayloadVariant: &meshpb.FromRadio_Rebooted{Rebooted: true}}) == nil
}

// Ready reports whether a client has completed the handshake.
func (r *Radio) Ready() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.client != nil && r.client.sending.Load()
}

// Received returns the packets the client sent that the radio accepted.
func (r *Radio) Received() []*meshpb.MeshPacket {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*meshpb.MeshPacket(nil), r.received...)
}

// RateLimited counts texts refused under the 2 s rule.
func (r *Radio) RateLimited() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rateLimited
}

// DutyLimited counts packets refused under the duty-cycle limit.
func (r *Radio) DutyLimited() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dutyLimited
}

// Handshakes counts completed configuration requests.
func (r *Radio) Handshakes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.handshakes
}

// SetAnswerDirect changes, from now on, how the mesh answers a direct
// message the client sends with want_ack (see Config.AnswerDirect); nil
// goes back to the configuration's.
func (r *Radio) SetAnswerDirect(answer func(p *meshpb.MeshPacket) (reason meshpb.Routing_Error, ok bool)) {
	r.mu.Lock()
	r.answer = answer
	r.mu.Unlock()
}

// DirectTextPacket builds a direct message from a peer to the radio's own
// node, as the radio hands one over decoded.
func (r *Radio) DirectTextPacket(from uint32, text string) *meshpb.MeshPacket {
	p := r.TextPacket(from, text)
	p.To = r.nodeNum()
	return p
}

// RoutingPacket builds the mesh's answer to the client's packet requestID
// as it reaches the radio from node from: NONE from the destination is its
// acknowledgement, NONE from the radio's own node an implicit one (a relay
// was heard repeating the packet), any other reason a refusal.
func (r *Radio) RoutingPacket(from, requestID uint32, reason meshpb.Routing_Error) *meshpb.MeshPacket {
	p := r.routingReply(requestID, reason)
	p.From = from
	return p
}

// TextPacket builds a broadcast text from a peer on the primary channel.
func (r *Radio) TextPacket(from uint32, text string) *meshpb.MeshPacket {
	return r.packet(from, meshpb.PortNum_TEXT_MESSAGE_APP, []byte(text))
}

func (r *Radio) packet(from uint32, port meshpb.PortNum, payload []byte) *meshpb.MeshPacket {
	return &meshpb.MeshPacket{
		From: from, To: mesh.Broadcast, Id: rand.Uint32() | 1, RxTime: proto.Uint32(uint32(time.Now().Unix())),
		RxSnr: 5.5, RxRssi: proto.Int32(-92), HopLimit: 2, HopStart: 3,
		PayloadVariant: &meshpb.MeshPacket_Decoded{Decoded: &meshpb.Data{Portnum: port, Payload: payload, Bitfield: proto.Uint32(1)}},
	}
}

// talk makes the peers send something now and then until ctx ends.
func (r *Radio) talk(ctx context.Context, c *conn) {
	if len(r.cfg.Peers) == 0 {
		return
	}
	next := make([]int, len(r.cfg.Peers))
	// Someone greets soon after the client connects, so a demo shows mesh
	// traffic at once rather than after a random wait.
	greeted := false
	for !greeted {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		if c.sending.Load() {
			p := r.cfg.Peers[0]
			if len(p.Texts) > 0 && c.writeMsg(packetMsg(r.TextPacket(p.Num, p.Texts[0]))) != nil {
				return
			}
			next[0], greeted = 1, true
		}
	}
	for {
		wait := r.cfg.TrafficInterval/time.Duration(len(r.cfg.Peers)) + rand.N(r.cfg.TrafficInterval/4+1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if !c.sending.Load() {
			continue
		}
		i := rand.IntN(len(r.cfg.Peers))
		p := r.cfg.Peers[i]
		var pkt *meshpb.MeshPacket
		switch kind := rand.IntN(10); {
		case kind < 5 && len(p.Texts) > 0:
			pkt = r.TextPacket(p.Num, p.Texts[next[i]%len(p.Texts)])
			next[i]++
		case kind < 7:
			pos, _ := proto.Marshal(&meshpb.Position{
				LatitudeI: proto.Int32(515000000 + int32(i)*100000), LongitudeI: proto.Int32(-1000000 + int32(i)*100000),
				Altitude: proto.Int32(42 + int32(i)), Time: uint32(time.Now().Unix()), SatsInView: 7, PrecisionBits: 32,
			})
			pkt = r.packet(p.Num, meshpb.PortNum_POSITION_APP, pos)
		case kind < 9:
			tel, _ := proto.Marshal(&meshpb.Telemetry{Time: uint32(time.Now().Unix()), Variant: &meshpb.Telemetry_DeviceMetrics{DeviceMetrics: &meshpb.DeviceMetrics{
				BatteryLevel: proto.Uint32(uint32(60 + rand.IntN(40))), Voltage: proto.Float32(3.9), ChannelUtilization: proto.Float32(4.5), AirUtilTx: proto.Float32(0.8), UptimeSeconds: proto.Uint32(3600),
			}}})
			pkt = r.packet(p.Num, meshpb.PortNum_TELEMETRY_APP, tel)
		default:
			u, _ := proto.Marshal(user(p.Num, p.LongName, p.ShortName))
			pkt = r.packet(p.Num, meshpb.PortNum_NODEINFO_APP, u)
		}
		if c.writeMsg(packetMsg(pkt)) != nil {
			return
		}
	}
}

// ListenTCP serves the radio on a TCP address like the firmware's port
// 4403: each new client replaces the previous one. It returns the bound
// address and the function that serves; serving stops when ctx ends, and
// that function returns once every connection it served is closed and its
// goroutines have stopped.
func (r *Radio) ListenTCP(ctx context.Context, addr string) (net.Addr, func() error, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("simulated radio: %w", err)
	}
	run := func() error {
		var wg sync.WaitGroup
		defer wg.Wait()
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		// Closing the listener is what ends a pending Accept.
		wg.Go(func() { <-ctx.Done(); ln.Close() })
		var prev net.Conn
		for {
			c, err := ln.Accept()
			if err != nil {
				if prev != nil {
					prev.Close()
				}
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("simulated radio: %w", err)
			}
			if prev != nil {
				prev.Close() // one API client at a time, as the firmware does
			}
			prev = c
			wg.Go(func() {
				defer c.Close()
				_ = r.Serve(ctx, c)
			})
		}
	}
	return ln.Addr(), run, nil
}
