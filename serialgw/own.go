package serialgw

import (
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
)

// What the radio itself sends goes on the Meshtastic topics the way the
// firmware publishes what it originates (Router::send calls MQTT::onSend for
// its own packets): texts from the room and the JSON downlink once the radio
// has taken them, and the radio's own NodeInfo, so that maps and logbooks
// see the gateway and what it says. None of it goes on the bridge topic
// topics.MeshRX: the XMPP side must not post it back.

// accepted is a packet the radio took. It waits Config.RefusalGrace before
// it is published: the firmware answers a text under its 2 s rate limit
// with an ordinary QueueStatus followed by a RATE_LIMIT_EXCEEDED NAK, and
// such a packet never went on the air.
type accepted struct {
	pkt *meshpb.MeshPacket
	due time.Time
}

// onAccepted notes that the radio took pkt, the packet as written to it.
func (s *session) onAccepted(pkt *meshpb.MeshPacket, now time.Time) {
	s.accepted = append(s.accepted, accepted{pkt: s.asSent(pkt, now), due: now.Add(s.g.cfg.RefusalGrace)})
}

// notTransmitted reports whether a routing error from our own radio about
// a packet it took means the packet never went on the air (Router::send
// and PhoneAPI drop it before encrypting it, which is where the firmware
// would publish it). Errors about delivery (no route, no acknowledgement)
// come after the packet went out.
func notTransmitted(reason meshpb.Routing_Error) bool {
	switch reason {
	case meshpb.Routing_RATE_LIMIT_EXCEEDED, meshpb.Routing_DUTY_CYCLE_LIMIT, meshpb.Routing_TOO_LARGE,
		meshpb.Routing_NO_CHANNEL, meshpb.Routing_NO_INTERFACE, meshpb.Routing_BAD_REQUEST,
		meshpb.Routing_PKI_FAILED, meshpb.Routing_PKI_UNKNOWN_PUBKEY, meshpb.Routing_PKI_SEND_FAIL_PUBLIC_KEY:
		return true
	}
	return false
}

// asSent is pkt as the radio sends it: the firmware fills in the sender,
// the starting hop limit, the relaying node and the time it took the packet.
func (s *session) asSent(pkt *meshpb.MeshPacket, now time.Time) *meshpb.MeshPacket {
	p := proto.CloneOf(pkt)
	p.From = s.radio.myNum
	p.HopStart = p.GetHopLimit()
	p.RelayNode = s.radio.myNum & 0xff
	p.RxTime = proto.Uint32(uint32(now.Unix()))
	return p
}

// dropAccepted forgets an accepted packet that the radio then refused.
func (s *session) dropAccepted(id uint32) {
	for i, a := range s.accepted {
		if a.pkt.GetId() == id {
			s.log.Debug("radio dropped a packet it had taken; not published", "id", id)
			s.accepted = append(s.accepted[:i], s.accepted[i+1:]...)
			return
		}
	}
}

// flushAccepted publishes the accepted packets whose grace has passed, or
// all of them when all is set (the radio is going away or handshaking again:
// they were taken, and the radio state they are published with is about to
// change).
func (s *session) flushAccepted(now time.Time, all bool) {
	n := 0
	for n < len(s.accepted) && (all || !now.Before(s.accepted[n].due)) {
		s.publishSent(s.accepted[n].pkt)
		n++
	}
	s.accepted = s.accepted[n:]
}

// publishSent puts a packet our radio sent on the Meshtastic topics, by the
// rules for a packet heard on a channel (mayUplink), except that a direct
// message the firmware encrypts to its recipient is private to the two of
// them: the bridge has only its plaintext, and publishes nothing of it.
func (s *session) publishSent(p *meshpb.MeshPacket) {
	r := s.radio
	if p.GetTo() == r.myNum {
		return // handled by the radio itself; nothing went on the air
	}
	if r.sentAsPKI(p) {
		s.log.Debug("direct message sent end to end encrypted; not published", "id", p.GetId(), "to", mesh.NodeID(p.GetTo()))
		return
	}
	chName, ok := r.channelName(p.GetChannel())
	if !ok || !s.mayUplink(p) {
		return
	}
	_, root := s.g.currentRadio()
	// On the air the firmware adds the bitfield to what it originates
	// (Router::perhapsEncode): OK to MQTT as the radio is set, and whether
	// a response is wanted.
	air := proto.CloneOf(p)
	var bits uint32
	if r.lora.GetConfigOkToMqtt() {
		bits |= 1
	}
	if air.GetDecoded().GetWantResponse() {
		bits |= 2
	}
	air.GetDecoded().Bitfield = proto.Uint32(bits)
	s.uplink(p, air, chName, root, r.gatewayID())
}

// sentAsPKI reports whether the firmware encrypts a packet our radio sends
// end to end with the recipient's public key (Router::perhapsEncode): a
// direct message on any port but traceroute, nodeinfo, routing and
// position, unless the radio is in licensed (ham) mode, where encryption is
// off. (A radio without keys refuses such a direct message rather than
// sending it on the channel: firmware 2.7.26 no longer sends legacy DMs.)
func (r *radioState) sentAsPKI(p *meshpb.MeshPacket) bool {
	if p.GetTo() == mesh.Broadcast || r.self.GetIsLicensed() {
		return false
	}
	switch p.GetDecoded().GetPortnum() {
	case meshpb.PortNum_TRACEROUTE_APP, meshpb.PortNum_NODEINFO_APP, meshpb.PortNum_ROUTING_APP, meshpb.PortNum_POSITION_APP:
		return false
	}
	return true
}

// publishNodeInfo publishes the radio's own NodeInfo (its User, from the
// handshake) as the firmware's periodic NodeInfo broadcast on the primary
// channel, which is what maps learn a gateway's name and hardware from.
func (s *session) publishNodeInfo(now time.Time) {
	r := s.radio
	if r.self == nil {
		return
	}
	u := proto.CloneOf(r.self)
	if u.Id == "" {
		u.Id = r.gatewayID()
	}
	if u.HwModel == meshpb.HardwareModel_UNSET {
		u.HwModel = r.hwModel
	}
	if u.IsLicensed {
		u.PublicKey = nil // the firmware leaves the key out in licensed mode
	}
	payload, err := proto.Marshal(u)
	if err != nil {
		s.log.Error("encode own NodeInfo", "err", err)
		return
	}
	s.publishSent(s.asSent(&meshpb.MeshPacket{
		To: mesh.Broadcast, Channel: 0, Id: s.g.ids.next(), HopLimit: r.hopLimit(),
		PayloadVariant: &meshpb.MeshPacket_Decoded{Decoded: &meshpb.Data{Portnum: meshpb.PortNum_NODEINFO_APP, Payload: payload}},
	}, now))
	s.log.Debug("published the radio's NodeInfo", "node", r.gatewayID())
}

// periodic publishes what the gateway announces of itself when it is due:
// its NodeInfo after each handshake and every NodeInfoInterval, and, when
// enabled, its map report at most every MapReportInterval. It also brings
// the airtime used, which the status record and the metrics read, up to
// now.
func (s *session) periodic(now time.Time, handshake bool) {
	g := s.g
	g.air.refresh(now)
	if handshake || now.Sub(g.nodeInfoAt) >= g.cfg.NodeInfoInterval {
		g.nodeInfoAt = now
		s.publishNodeInfo(now)
	}
	if g.cfg.MapReport && (g.mapReportAt.IsZero() || now.Sub(g.mapReportAt) >= g.cfg.MapReportInterval) {
		if s.publishMapReport(now) {
			g.mapReportAt = now
		}
	}
}
