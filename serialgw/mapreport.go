package serialgw

import (
	"fmt"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// The map report is the firmware's MapReport (MQTT::perhapsReportToMap),
// which meshmap.net and meshtastic-map read from <root>/2/map/: a decoded
// MAP_REPORT_APP packet from the gateway's node to broadcast, never
// encrypted, in a ServiceEnvelope naming the primary channel.

// Map report position precision, in bits kept of latitude and longitude:
// the firmware forces anything outside 12..15 to 14 (about 1.5 km), to keep
// huge circles and exact homes off the maps.
const (
	MinMapReportPrecision     = 12
	MaxMapReportPrecision     = 15
	DefaultMapReportPrecision = 14
)

// onlineWindow is how recently a node must have been heard to count as
// online (the firmware's NUM_ONLINE_SECS).
const onlineWindow = 2 * time.Hour

// mapLongNameMax is the longest long name a MapReport carries (nanopb
// max_size 25, with the terminating NUL).
const mapLongNameMax = 24

// ValidMapReportPrecision checks a map report position precision, in bits.
func ValidMapReportPrecision(bits uint32) error {
	if bits < MinMapReportPrecision || bits > MaxMapReportPrecision {
		return fmt.Errorf("want %d to %d bits, as the firmware allows (%d, about 1.5 km, by default)",
			MinMapReportPrecision, MaxMapReportPrecision, DefaultMapReportPrecision)
	}
	return nil
}

// truncateCoord keeps the top bits of a coordinate (degrees × 1e7) and
// moves it to the centre of the cell those bits leave, as the firmware does
// for positions at reduced precision.
func truncateCoord(v int32, bits uint32) int32 {
	mask := ^uint32(0) << (32 - bits)
	return int32(uint32(v)&mask + 1<<(31-bits))
}

// setOwnPosition records the radio's own position, when it has one (the
// firmware takes 0, 0 for none).
func (s *session) setOwnPosition(pos *meshpb.Position) {
	if pos.GetLatitudeI() != 0 || pos.GetLongitudeI() != 0 {
		s.ownPos = pos
	}
}

// mapReport builds the radio's MapReport.
func (s *session) mapReport(now time.Time) *meshpb.MapReport {
	r := s.radio
	long := r.self.GetLongName()
	for len(long) > mapLongNameMax {
		_, n := utf8.DecodeLastRuneInString(long)
		long = long[:len(long)-n] // cut whole characters, not bytes
	}
	rep := &meshpb.MapReport{
		LongName: long, ShortName: r.self.GetShortName(), Role: r.self.GetRole(), HwModel: r.hwModel,
		FirmwareVersion: r.firmware, Region: r.lora.GetRegion(), ModemPreset: r.lora.GetModemPreset(),
		HasDefaultChannel:   r.hasDefaultChannel(),
		NumOnlineLocalNodes: uint32(s.g.nodes.onlineLocal(now, onlineWindow, r.myNum)),
	}
	// The position goes only with the radio's own consent, as the firmware
	// requires (map_report_settings.should_report_location, off by default).
	if pos := s.ownPos; pos != nil && r.mqtt.GetMapReportSettings().GetShouldReportLocation() {
		bits := s.g.cfg.MapReportPrecision
		rep.LatitudeI, rep.LongitudeI = truncateCoord(pos.GetLatitudeI(), bits), truncateCoord(pos.GetLongitudeI(), bits)
		rep.Altitude, rep.PositionPrecision, rep.HasOptedReportLocation = pos.GetAltitude(), bits, true
	}
	return rep
}

// publishMapReport publishes the map report, and reports whether it did:
// not for a radio without a region (the firmware has no map topic before
// one is set), nor for a radio in client proxy mode that reports to the map
// itself.
func (s *session) publishMapReport(now time.Time) bool {
	r := s.radio
	if r.lora.GetRegion() == meshpb.Config_LoRaConfig_UNSET {
		s.logMapSkip("radio has no LoRa region set; no map report")
		return false
	}
	if r.proxyActive() && r.mqtt.GetMapReportingEnabled() {
		s.logMapSkip("radio sends its own map reports through the client proxy; not sending a second")
		return false
	}
	chName, ok := r.channelName(0)
	if !ok {
		return false
	}
	rep := s.mapReport(now)
	payload, err := proto.Marshal(rep)
	if err != nil {
		s.log.Error("encode map report", "err", err)
		return false
	}
	gw := r.gatewayID()
	p := &meshpb.MeshPacket{
		From: r.myNum, To: mesh.Broadcast, Id: s.g.ids.next(),
		PayloadVariant: &meshpb.MeshPacket_Decoded{Decoded: &meshpb.Data{Portnum: meshpb.PortNum_MAP_REPORT_APP, Payload: payload}},
	}
	b, err := proto.Marshal(&meshpb.ServiceEnvelope{Packet: p, ChannelId: chName, GatewayId: gw})
	if err != nil {
		s.log.Error("encode map report", "err", err)
		return false
	}
	_, root := s.g.currentRadio()
	s.g.publish(topics.Map(root), b, false)
	s.log.Info("published map report", "topic", topics.Map(root), "online_nodes", rep.GetNumOnlineLocalNodes(),
		"position", rep.GetHasOptedReportLocation(), "precision_bits", rep.GetPositionPrecision())
	return true
}

// logMapSkip logs once per session why no map report goes out.
func (s *session) logMapSkip(msg string) {
	if !s.mapSkipLogged {
		s.mapSkipLogged = true
		s.log.Info(msg)
	}
}

// hasDefaultChannel reports whether the radio has the mesh's default
// channel (Channels::hasDefaultChannel): a preset in use on its default
// frequency slot, and a channel named after the preset with the default key.
// The slot is taken as the default one when the primary channel is the
// default-named one and no slot is chosen by number; the firmware also
// counts a chosen slot, or another name, that happens to land on the same
// frequency.
func (r *radioState) hasDefaultChannel() bool {
	l := r.lora
	if !l.GetUsePreset() || l.GetOverrideFrequency() != 0 || l.GetChannelNum() != 0 {
		return false
	}
	preset := mesh.PresetName(l.GetModemPreset())
	if name, ok := r.channelName(0); !ok || name != preset {
		return false
	}
	for i, c := range r.channels {
		psk := c.GetSettings().GetPsk()
		if name, ok := r.channelName(uint32(i)); ok && name == preset && len(psk) == 1 && psk[0] == 1 {
			return true
		}
	}
	return false
}
