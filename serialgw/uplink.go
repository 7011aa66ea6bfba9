package serialgw

import (
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// onPacket publishes one packet heard by the radio: decoded on the bridge
// topic for the other gateways, and on the Meshtastic topics the way a
// firmware gateway would.
func (s *session) onPacket(p *meshpb.MeshPacket) {
	g := s.g
	g.Stats.PacketsIn.Add(1)
	if p.GetId() != 0 && g.heardBefore(p.GetFrom(), p.GetId(), time.Now()) {
		g.Stats.Duplicates.Add(1)
		s.log.Debug("duplicate packet dropped", "from", mesh.NodeID(p.GetFrom()), "id", p.GetId())
		return
	}
	d := p.GetDecoded()
	if d != nil {
		s.learn(p, d)
		if d.GetPortnum() == meshpb.PortNum_ROUTING_APP {
			// The answer to a packet of ours counts whether or not the
			// answer itself is published.
			s.onRouting(p, d)
		}
	}
	r := s.radio
	_, root := g.currentRadio()
	gw := r.gatewayID()

	if p.GetPkiEncrypted() {
		s.onPKIPacket(p, d, root, gw)
		return
	}
	if d == nil {
		return // on a channel our radio has no key for: the firmware does not uplink it either
	}
	chName, ok := r.channelName(p.GetChannel())
	if !ok {
		s.log.Debug("packet on an unknown channel", "channel", p.GetChannel(), "from", mesh.NodeID(p.GetFrom()))
		return
	}
	s.publishEnvelope(topics.MeshRX, p, chName, gw)
	g.Stats.PacketsPublished.Add(1)

	if s.mayUplink(p) {
		s.uplink(p, p, chName, root, gw)
	}
}

// mayUplink applies the firmware's rules (MQTT::onSend) to a decoded
// packet on a channel: whether it goes on the Meshtastic topics.
func (s *session) mayUplink(p *meshpb.MeshPacket) bool {
	r := s.radio
	switch {
	case p.GetViaMqtt():
		return false // never loop a packet back into MQTT
	case r.proxyActive() && r.channels[p.GetChannel()].GetSettings().GetUplinkEnabled():
		return false // the radio publishes this channel itself, through the proxy
	case s.g.cfg.PublicBroker && p.GetFrom() != r.myNum && p.GetDecoded().GetBitfield()&1 == 0:
		return false // the sender did not allow MQTT uplink
	case s.g.cfg.PublicBroker && !r.channelUplink(p.GetChannel()):
		// What the world can read carries only the channels the radio's
		// owner opened to MQTT, as the firmware publishes.
		return false
	}
	return true
}

// uplink publishes a decoded packet on channel chName on the Meshtastic
// topics, as the firmware does: the envelope (encrypted with the channel
// key unless encryption is off) and the JSON form. air is the packet as it
// went on the air, which is what gets encrypted; it differs from p only for
// packets our radio originates, whose Data the firmware completes (the
// bitfield) when it encrypts them.
func (s *session) uplink(p, air *meshpb.MeshPacket, chName, root, gw string) {
	g, r := s.g, s.radio
	env := p
	if g.cfg.Encrypt {
		key, err := r.channelKey(p.GetChannel())
		if err != nil {
			s.log.Warn("channel key unusable; publishing decoded", "channel", chName, "err", err)
		} else if key != nil {
			if enc, err := encryptPacket(air, chName, key); err == nil {
				env = enc
			} else {
				s.log.Warn("encrypting packet", "err", err)
			}
		}
	}
	s.publishEnvelope(topics.Envelope(root, chName, gw), env, chName, gw)

	//lint:ignore SA1019 deprecated since firmware 2.8 dropped JSON, still what a 2.7 radio's owner sets
	if g.cfg.PublicBroker && !r.mqtt.GetJsonEnabled() {
		return // the firmware writes JSON only when its owner enabled it
	}
	js, err := mesh.JSONUplink(p, r.myNum, g.longName)
	if err != nil {
		s.log.Debug("no JSON form", "port", p.GetDecoded().GetPortnum().String(), "err", err)
		return
	}
	g.publish(topics.JSON(root, chName, gw), js, false)
}

// onPKIPacket handles a direct message encrypted end to end with the
// recipients' public keys. Its content is private to two people, so it never
// goes on a channel topic and is never re-encrypted with a channel key (which
// anyone with the default key could read). Nothing of it goes to a public
// broker. On the embedded or a private broker: a packet our radio could not
// decrypt goes on e/PKI as the firmware publishes it (ciphertext), and one
// addressed to our radio, which the radio hands over decrypted, goes on the
// bridge topic (for the XMPP side's direct messages) and as JSON under
// json/PKI, for local tools only.
func (s *session) onPKIPacket(p *meshpb.MeshPacket, d *meshpb.Data, root, gw string) {
	g := s.g
	if g.cfg.PublicBroker || p.GetViaMqtt() {
		s.log.Debug("PKI direct message kept off the broker", "from", mesh.NodeID(p.GetFrom()), "to", mesh.NodeID(p.GetTo()))
		return
	}
	if d == nil {
		s.publishEnvelope(topics.Envelope(root, topics.PKIChannel, gw), p, topics.PKIChannel, gw)
		return
	}
	s.publishEnvelope(topics.MeshRX, p, topics.PKIChannel, gw)
	g.Stats.PacketsPublished.Add(1)
	js, err := mesh.JSONUplink(p, s.radio.myNum, g.longName)
	if err != nil {
		s.log.Debug("no JSON form", "port", d.GetPortnum().String(), "err", err)
		return
	}
	g.publish(topics.JSON(root, topics.PKIChannel, gw), js, false)
}

func (s *session) publishEnvelope(topic string, p *meshpb.MeshPacket, channel, gw string) {
	b, err := proto.Marshal(&meshpb.ServiceEnvelope{Packet: p, ChannelId: channel, GatewayId: gw})
	if err != nil {
		s.log.Error("encode envelope", "err", err)
		return
	}
	s.g.publish(topic, b, false)
}

// encryptPacket returns a copy of p with its Data encrypted by the channel
// key and its channel index replaced by the channel hash, as the firmware
// puts it on the air and on MQTT.
func encryptPacket(p *meshpb.MeshPacket, channel string, key []byte) (*meshpb.MeshPacket, error) {
	plain, err := proto.Marshal(p.GetDecoded())
	if err != nil {
		return nil, err
	}
	ct, err := mesh.Crypt(key, p.GetFrom(), p.GetId(), plain)
	if err != nil {
		return nil, err
	}
	enc := proto.CloneOf(p)
	enc.Channel = uint32(mesh.ChannelHash(channel, key))
	enc.PayloadVariant = &meshpb.MeshPacket_Encrypted{Encrypted: ct}
	return enc, nil
}

// learn keeps the node database current from what nodes send.
func (s *session) learn(p *meshpb.MeshPacket, d *meshpb.Data) {
	if d.GetPortnum() == meshpb.PortNum_TELEMETRY_APP && p.GetFrom() == s.radio.myNum {
		var tel meshpb.Telemetry
		if proto.Unmarshal(d.GetPayload(), &tel) == nil && tel.GetDeviceMetrics() != nil {
			s.g.air.observe(tel.GetDeviceMetrics())
		}
	}
	if d.GetPortnum() == meshpb.PortNum_POSITION_APP && p.GetFrom() == s.radio.myNum {
		var pos meshpb.Position
		if proto.Unmarshal(d.GetPayload(), &pos) == nil {
			s.setOwnPosition(&pos)
		}
	}
	s.g.nodes.heardVia(p.GetFrom(), p.GetViaMqtt())
	var user *meshpb.User
	if d.GetPortnum() == meshpb.PortNum_NODEINFO_APP {
		user = new(meshpb.User)
		if err := proto.Unmarshal(d.GetPayload(), user); err != nil {
			s.log.Debug("undecodable nodeinfo", "from", mesh.NodeID(p.GetFrom()), "err", err)
			user = nil
		}
	}
	if rec, changed := s.g.nodes.updateUser(p.GetFrom(), user, p.GetRxTime()); changed {
		s.g.publishNode(rec)
	}
}

// longName names a node for the JSON traceroute form.
func (g *Gateway) longName(num uint32) string {
	if n, ok := g.nodes.get(num); ok && n.LongName != "" {
		return n.LongName
	}
	return ""
}

// onRouting reports a routing ACK/NAK for one of our packets against the
// request that caused it.
func (s *session) onRouting(p *meshpb.MeshPacket, d *meshpb.Data) {
	var rt meshpb.Routing
	if proto.Unmarshal(d.GetPayload(), &rt) != nil {
		return
	}
	reason := rt.GetErrorReason()
	if p.GetFrom() == s.radio.myNum && notTransmitted(reason) {
		// The radio took the packet (its QueueStatus) and then dropped it
		// (its text rate limit, its duty cycle): it never went out.
		s.dropAccepted(d.GetRequestId())
	}
	req, ok := s.sentIDs[d.GetRequestId()]
	if !ok {
		// A JSON downlink waiting for its answer across a reconnect.
		req, ok = s.g.awaitingReply(d.GetRequestId())
	}
	if !ok {
		return
	}
	if reason == meshpb.Routing_NONE && req.dl == nil && req.wantAck() && p.GetFrom() != req.to {
		// A relay repeating our direct message (the radio's implicit
		// acknowledgement): not the destination's word, which is what the
		// requester waits for.
		s.log.Debug("a relay repeated our direct message", "id", d.GetRequestId(), "by", mesh.NodeID(p.GetFrom()))
		return
	}
	if reason != meshpb.Routing_NONE {
		s.g.Stats.SendFailed.Add(1)
		s.log.Warn("mesh refused our packet", "id", d.GetRequestId(), "origin", req.origin, "request", req.id, "reason", reason.String())
	} else {
		s.log.Debug("mesh acknowledged our packet", "id", d.GetRequestId(), "by", mesh.NodeID(p.GetFrom()))
	}
	s.g.report(req, reason, p.GetFrom(), "")
}

// onProxyUplink passes what a radio in client proxy mode publishes straight
// to the broker.
func (s *session) onProxyUplink(m *meshpb.MqttClientProxyMessage) {
	payload := m.GetData()
	if payload == nil {
		payload = []byte(m.GetText())
	}
	s.g.publish(m.GetTopic(), payload, m.GetRetained())
}
