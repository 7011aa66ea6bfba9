package mesh

// The firmware's JSON forms (firmware 2.7.26 and older, §3.7 and §3.8 of the
// wire reference): the uplink object a gateway publishes under
// <root>/2/json/<channel>/<gateway> for each packet, and the downlink object
// ("sendtext", "sendposition") it accepts back. Newer firmware no longer
// produces JSON, so the bridge builds it itself, byte for byte as firmware
// 2.7.26 writes it.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// JSON "type" values of the uplink form.
const (
	jsonTypeText           = "text"
	jsonTypeTelemetry      = "telemetry"
	jsonTypeNodeInfo       = "nodeinfo"
	jsonTypePosition       = "position"
	jsonTypeWaypoint       = "waypoint"
	jsonTypeNeighborInfo   = "neighborinfo"
	jsonTypeTraceroute     = "traceroute"
	jsonTypeDetection      = "detection"
	jsonTypePaxcounter     = "paxcounter"
	jsonTypeGPIOsChanged   = "gpios_changed"
	jsonTypeGPIOsReadReply = "gpios_read_reply"
)

// JSONUplink renders p byte for byte as firmware 2.7.26 publishes it under
// <root>/2/json/<channel>/<gateway>: the object of
// MeshPacketSerializer::JsonSerialize (src/serialization/
// MeshPacketSerializer.cpp), which MQTT::onSend (src/mqtt/MQTT.cpp) calls
// with the packet as the gateway decoded it, written out by the firmware's
// JSON library (src/serialization/JSONValue.cpp). gateway is the node number
// of the publishing radio; it becomes "sender". longName gives the long names
// a traceroute's route shows; it may be nil, and "" means the name is not
// known ("Unknown").
//
// The firmware's rules:
//
//   - Every packet has id, timestamp (rx_time; 0 without a clock), to, from,
//     channel, type and sender (the gateway's "!%08x"), all numbers but type
//     and sender. rssi and snr are there only when non-zero. hops_away and
//     hop_start are there only when the hop count is known (getHopsAway,
//     src/mesh/NodeDB.cpp): hop_start is non-zero or the packet is decoded
//     and carries a bitfield (every sender since firmware 2.5, so a packet
//     sent with no hops has "hops_away":0,"hop_start":0), and hop_limit is
//     not above hop_start.
//   - type and payload depend on the port (uplinkPayload). Ports the
//     firmware does not render, traceroute requests, remote-hardware
//     messages other than GPIOS_CHANGED and READ_GPIOS_REPLY, and packets
//     that are not decoded have "type":"" and no payload. A payload the
//     firmware's protobuf decoder (nanopb, with the field sizes of its
//     generated structs) refuses keeps its type and has no payload.
//   - Keys are in byte order, nothing is indented, every number is written
//     like printf's %.15g (a float is widened to double first, so 3.9 comes
//     out as 3.90000009536743), NaN and infinities as null; strings escape
//     ", \, / and the control characters, and keep other UTF-8 as it is; a
//     C string ends at its first NUL byte.
//
// Two choices where firmware builds differ or misbehave: bytes that are not
// UTF-8, which the firmware copies through (making the publish invalid JSON),
// become U+FFFD, so the output is always valid UTF-8 JSON; PAXCOUNTER_APP is
// rendered as the ESP32 builds render it (other builds write "type":"").
//
// The only error is a nil packet.
func JSONUplink(p *meshpb.MeshPacket, gateway uint32, longName func(uint32) string) ([]byte, error) {
	if p == nil {
		return nil, errors.New("json uplink: no packet")
	}
	obj := map[string]any{
		"id":        fwUint(p.GetId()),
		"timestamp": fwUint(p.GetRxTime()),
		"to":        fwUint(p.GetTo()),
		"from":      fwUint(p.GetFrom()),
		"channel":   fwUint(p.GetChannel()),
		"sender":    NodeID(gateway),
	}
	typ := ""
	if d := p.GetDecoded(); d != nil {
		var payload any
		typ, payload = uplinkPayload(p, d, longName)
		if payload != nil {
			obj["payload"] = payload
		}
	}
	obj["type"] = typ
	if rssi := p.GetRxRssi(); rssi != 0 {
		obj["rssi"] = fwInt(rssi)
	}
	if snr := p.GetRxSnr(); snr != 0 { // NaN is not 0 either: it comes out as null
		obj["snr"] = fwFloat(snr)
	}
	if hops, ok := hopsAway(p); ok {
		obj["hops_away"] = fwUint(uint32(hops))
		obj["hop_start"] = fwUint(uint32(uint8(p.GetHopStart())))
	}
	return appendFirmwareJSON(nil, obj), nil
}

// hopsAway is the firmware's getHopsAway (src/mesh/NodeDB.cpp) for the packet
// it serializes, whose hop_start and hop_limit are uint8_t and whose result
// is an int8_t; ok is false when the firmware leaves hops_away out.
func hopsAway(p *meshpb.MeshPacket) (hops int8, ok bool) {
	start, limit := uint8(p.GetHopStart()), uint8(p.GetHopLimit())
	d := p.GetDecoded()
	if start == 0 && (d == nil || d.Bitfield == nil) {
		return 0, false // a sender older than 2.3 (no hop_start), or not decoded
	}
	if start < limit {
		return 0, false
	}
	hops = int8(int(start) - int(limit))
	return hops, hops >= 0
}

// uplinkPayload returns the "type" and "payload" for d, following
// MeshPacketSerializer::JsonSerialize. A nil payload means the key is left
// out; fwNull{} is a JSON null payload (a text that reads "null").
func uplinkPayload(p *meshpb.MeshPacket, d *meshpb.Data, longName func(uint32) string) (string, any) {
	b := d.GetPayload()
	switch d.GetPortnum() {
	case meshpb.PortNum_TEXT_MESSAGE_APP:
		// The payload as a C string. If the firmware's JSON parser reads it
		// as JSON, that value (re-serialized) is the payload.
		text := cString(b)
		if v, ok := parseFirmwareJSON(text); ok {
			return jsonTypeText, v
		}
		return jsonTypeText, map[string]any{"text": string(text)}

	case meshpb.PortNum_DETECTION_SENSOR_APP:
		return jsonTypeDetection, map[string]any{"text": string(cString(b))}

	case meshpb.PortNum_TELEMETRY_APP:
		var t meshpb.Telemetry
		if !decodeLikeNanopb(b, &t) {
			return jsonTypeTelemetry, nil
		}
		return jsonTypeTelemetry, telemetryPayload(&t)

	case meshpb.PortNum_NODEINFO_APP:
		var u meshpb.User
		if !decodeLikeNanopb(b, &u) {
			return jsonTypeNodeInfo, nil
		}
		return jsonTypeNodeInfo, map[string]any{
			"id":        cStr(u.GetId()),
			"longname":  cStr(u.GetLongName()),
			"shortname": cStr(u.GetShortName()),
			"hardware":  fwInt(int32(u.GetHwModel())),
			"role":      fwInt(int32(u.GetRole())),
		}

	case meshpb.PortNum_POSITION_APP:
		var pos meshpb.Position
		if !decodeLikeNanopb(b, &pos) {
			return jsonTypePosition, nil
		}
		return jsonTypePosition, positionPayload(&pos)

	case meshpb.PortNum_WAYPOINT_APP:
		var w meshpb.Waypoint
		if !decodeLikeNanopb(b, &w) {
			return jsonTypeWaypoint, nil
		}
		return jsonTypeWaypoint, map[string]any{
			"id":          fwUint(w.GetId()),
			"name":        cStr(w.GetName()),
			"description": cStr(w.GetDescription()),
			"expire":      fwUint(w.GetExpire()),
			"locked_to":   fwUint(w.GetLockedTo()),
			"latitude_i":  fwInt(w.GetLatitudeI()),
			"longitude_i": fwInt(w.GetLongitudeI()),
		}

	case meshpb.PortNum_NEIGHBORINFO_APP:
		var ni meshpb.NeighborInfo
		if !decodeLikeNanopb(b, &ni) {
			return jsonTypeNeighborInfo, nil
		}
		neighbors := make([]any, 0, len(ni.GetNeighbors()))
		for _, n := range ni.GetNeighbors() {
			neighbors = append(neighbors, map[string]any{
				"node_id": fwUint(n.GetNodeId()),
				"snr":     fwInt(truncInt32(n.GetSnr())), // (int) of the float
			})
		}
		return jsonTypeNeighborInfo, map[string]any{
			"node_id":                      fwUint(ni.GetNodeId()),
			"node_broadcast_interval_secs": fwUint(ni.GetNodeBroadcastIntervalSecs()),
			"last_sent_by_id":              fwUint(ni.GetLastSentById()),
			"neighbors_count":              fwInt(int32(len(neighbors))),
			"neighbors":                    neighbors,
		}

	case meshpb.PortNum_TRACEROUTE_APP:
		if d.GetRequestId() == 0 {
			return "", nil // only responses are rendered; a request has no type
		}
		var rd meshpb.RouteDiscovery
		if !decodeLikeNanopb(b, &rd) {
			return jsonTypeTraceroute, nil
		}
		return jsonTypeTraceroute, traceroutePayload(p, &rd, longName)

	case meshpb.PortNum_PAXCOUNTER_APP:
		var pc meshpb.Paxcount
		if !decodeLikeNanopb(b, &pc) {
			return jsonTypePaxcounter, nil
		}
		return jsonTypePaxcounter, map[string]any{
			"wifi_count": fwUint(pc.GetWifi()),
			"ble_count":  fwUint(pc.GetBle()),
			"uptime":     fwUint(pc.GetUptime()),
		}

	case meshpb.PortNum_REMOTE_HARDWARE_APP:
		return remoteHardwarePayload(b)
	}
	return "", nil
}

// telemetryPayload renders the variant the firmware renders. Device metrics
// always have voltage, channel_utilization, air_util_tx and uptime_seconds
// (0 when absent) and battery_level when present; the environment, air
// quality and power fields appear when present, zero or not. Other variants
// (local stats, health, host, ...) and a Telemetry without one give {}.
func telemetryPayload(t *meshpb.Telemetry) map[string]any {
	m := map[string]any{}
	float := func(key string, v *float32) { // present: a double
		if v != nil {
			m[key] = fwFloat(*v)
		}
	}
	unsigned := func(key string, v *uint32) { // present: an unsigned int
		if v != nil {
			m[key] = fwUint(*v)
		}
	}
	switch v := t.GetVariant().(type) {
	case *meshpb.Telemetry_DeviceMetrics:
		dm := v.DeviceMetrics
		if dm != nil && dm.BatteryLevel != nil {
			m["battery_level"] = fwInt(int32(*dm.BatteryLevel)) // (int)
		}
		m["voltage"] = fwFloat(dm.GetVoltage())
		m["channel_utilization"] = fwFloat(dm.GetChannelUtilization())
		m["air_util_tx"] = fwFloat(dm.GetAirUtilTx())
		m["uptime_seconds"] = fwUint(dm.GetUptimeSeconds())
	case *meshpb.Telemetry_EnvironmentMetrics:
		em := v.EnvironmentMetrics
		if em == nil {
			break
		}
		float("temperature", em.Temperature)
		float("relative_humidity", em.RelativeHumidity)
		float("barometric_pressure", em.BarometricPressure)
		float("gas_resistance", em.GasResistance)
		float("voltage", em.Voltage)
		float("current", em.Current)
		float("lux", em.Lux)
		float("white_lux", em.WhiteLux)
		unsigned("iaq", em.Iaq)
		float("distance", em.Distance)
		float("wind_speed", em.WindSpeed)
		unsigned("wind_direction", em.WindDirection)
		float("wind_gust", em.WindGust)
		float("wind_lull", em.WindLull)
		float("radiation", em.Radiation)
		float("ir_lux", em.IrLux)
		float("uv_lux", em.UvLux)
		float("weight", em.Weight)
		float("rainfall_1h", em.Rainfall_1H)
		float("rainfall_24h", em.Rainfall_24H)
		unsigned("soil_moisture", em.SoilMoisture)
		float("soil_temperature", em.SoilTemperature)
	case *meshpb.Telemetry_AirQualityMetrics:
		// 2.7.26 renders the standard PM values, CO2 and formaldehyde; the
		// environmental PM values (pm10_e, ...) of 2.7.15 and older are gone.
		aq := v.AirQualityMetrics
		if aq == nil {
			break
		}
		unsigned("pm10", aq.Pm10Standard)
		unsigned("pm25", aq.Pm25Standard)
		unsigned("pm100", aq.Pm100Standard)
		unsigned("co2", aq.Co2)
		float("co2_temperature", aq.Co2Temperature)
		float("co2_humidity", aq.Co2Humidity)
		float("form_formaldehyde", aq.FormFormaldehyde)
		float("form_temperature", aq.FormTemperature)
		float("form_humidity", aq.FormHumidity)
	case *meshpb.Telemetry_PowerMetrics:
		pm := v.PowerMetrics
		if pm == nil {
			break
		}
		float("voltage_ch1", pm.Ch1Voltage)
		float("current_ch1", pm.Ch1Current)
		float("voltage_ch2", pm.Ch2Voltage)
		float("current_ch2", pm.Ch2Current)
		float("voltage_ch3", pm.Ch3Voltage)
		float("current_ch3", pm.Ch3Current)
	}
	return m
}

// positionPayload: latitude_i and longitude_i always (0 when absent), the
// rest only when non-zero, with the firmware's C types (PDOP, HDOP, VDOP and
// precision_bits as int).
func positionPayload(pos *meshpb.Position) map[string]any {
	m := map[string]any{
		"latitude_i":  fwInt(pos.GetLatitudeI()),
		"longitude_i": fwInt(pos.GetLongitudeI()),
	}
	nonZero := func(key string, v uint32, c func(uint32) float64) {
		if v != 0 {
			m[key] = c(v)
		}
	}
	asInt := func(v uint32) float64 { return fwInt(int32(v)) }
	nonZero("time", pos.GetTime(), fwUint)
	nonZero("timestamp", pos.GetTimestamp(), fwUint)
	if alt := pos.GetAltitude(); alt != 0 {
		m["altitude"] = fwInt(alt)
	}
	nonZero("ground_speed", pos.GetGroundSpeed(), fwUint)
	nonZero("ground_track", pos.GetGroundTrack(), fwUint)
	nonZero("sats_in_view", pos.GetSatsInView(), fwUint)
	nonZero("PDOP", pos.GetPDOP(), asInt)
	nonZero("HDOP", pos.GetHDOP(), asInt)
	nonZero("VDOP", pos.GetVDOP(), asInt)
	nonZero("precision_bits", pos.GetPrecisionBits(), asInt)
	return m
}

// traceroutePayload follows the firmware: the forward route runs from the
// response's destination (the original requester) through the recorded hops
// to its source, the route back the other way; the names are the long names
// of the gateway's node database, "Unknown" when it has none; SNRs are in
// quarter dB, divided as floats.
func traceroutePayload(p *meshpb.MeshPacket, rd *meshpb.RouteDiscovery, longName func(uint32) string) map[string]any {
	name := func(n uint32) any {
		if longName != nil {
			if s := longName(n); s != "" {
				return cStr(s)
			}
		}
		return "Unknown"
	}
	route := make([]any, 0, len(rd.GetRoute())+2)
	route = append(route, name(p.GetTo()))
	for _, n := range rd.GetRoute() {
		route = append(route, name(n))
	}
	route = append(route, name(p.GetFrom()))

	back := make([]any, 0, len(rd.GetRouteBack())+2)
	back = append(back, name(p.GetFrom()))
	for _, n := range rd.GetRouteBack() {
		back = append(back, name(n))
	}
	back = append(back, name(p.GetTo()))

	return map[string]any{
		"route":       route,
		"route_back":  back,
		"snr_towards": quarterDB(rd.GetSnrTowards()),
		"snr_back":    quarterDB(rd.GetSnrBack()),
	}
}

func quarterDB(v []int32) []any {
	out := make([]any, 0, len(v))
	for _, q := range v {
		out = append(out, fwFloat(float32(q)/4))
	}
	return out
}

// HardwareMessage.Type values (remote_hardware.proto) the firmware renders.
const (
	hardwareGPIOsChanged   = 3
	hardwareReadGPIOsReply = 5
)

// remoteHardwarePayload renders a REMOTE_HARDWARE_APP payload (a
// HardwareMessage: type 1 enum, gpio_mask 2 uint64, gpio_value 3 uint64) as
// the firmware does: GPIOS_CHANGED as "gpios_changed" with gpio_value,
// READ_GPIOS_REPLY as "gpios_read_reply" with gpio_value and gpio_mask, both
// cast to a 32-bit unsigned int; any other message, or one that does not
// decode, as "type":"" without a payload.
func remoteHardwarePayload(b []byte) (string, any) {
	var typ, mask, value uint64
	for len(b) > 0 {
		num, wt, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", nil
		}
		b = b[n:]
		if num < 1 || num > 3 {
			if n = nanopbSkip(num, wt, b); n < 0 {
				return "", nil
			}
			b = b[n:]
			continue
		}
		if wt != protowire.VarintType {
			return "", nil
		}
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return "", nil
		}
		b = b[n:]
		switch num {
		case 1:
			if v > math.MaxUint32 { // a 32-bit enum in the C struct
				return "", nil
			}
			typ = v
		case 2:
			mask = v
		case 3:
			value = v
		}
	}
	switch typ {
	case hardwareGPIOsChanged:
		return jsonTypeGPIOsChanged, map[string]any{"gpio_value": fwUint(uint32(value))}
	case hardwareReadGPIOsReply:
		return jsonTypeGPIOsReadReply, map[string]any{
			"gpio_value": fwUint(uint32(value)),
			"gpio_mask":  fwUint(uint32(mask)),
		}
	}
	return "", nil
}

// The firmware's JSON library keeps every number as a double: these are the
// conversions its constructors make from unsigned int, int and float.
func fwUint(v uint32) float64   { return float64(v) }
func fwInt(v int32) float64     { return float64(v) }
func fwFloat(v float32) float64 { return float64(v) }

// truncInt32 converts like a C (int) cast, toward zero, but defined for
// every input: NaN gives 0 and out-of-range values saturate.
func truncInt32(f float32) int32 {
	x := float64(f)
	switch {
	case math.IsNaN(x):
		return 0
	case x >= math.MaxInt32:
		return math.MaxInt32
	case x <= math.MinInt32:
		return math.MinInt32
	}
	return int32(x)
}

// cString is b read as a C string: up to its first NUL byte.
func cString(b []byte) []byte {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i]
	}
	return b
}

// cStr is s read as a C string: up to its first NUL byte.
func cStr(s string) string {
	if i := strings.IndexByte(s, 0); i >= 0 {
		return s[:i]
	}
	return s
}

// ---------------------------------------------------------------------------
// Decoding a payload as the firmware's nanopb decoder does
// ---------------------------------------------------------------------------

// decodeLikeNanopb decodes b into m and reports whether the firmware's
// decoder (pb_decode_from_bytes, nanopb with the firmware's generated
// structs) accepts b. nanopb does not check UTF-8, so strings are taken as
// they are (Go's decoder would refuse a long name cut inside a character),
// but it refuses what does not fit its fixed-size C structs (nanopbAccepts).
func decodeLikeNanopb(b []byte, m proto.Message) bool {
	md := m.ProtoReflect().Descriptor()
	if !nanopbAccepts(b, md) {
		return false
	}
	// Go's decoder checks the UTF-8 of string fields; take the top-level
	// strings (the ones rendered: User's and Waypoint's) out of its way.
	var rest []byte
	strs := map[protoreflect.FieldDescriptor][]byte{}
	for in := b; len(in) > 0; {
		num, wt, n := protowire.ConsumeTag(in)
		if n < 0 {
			return false
		}
		v := protowire.ConsumeFieldValue(num, wt, in[n:])
		if v < 0 {
			return false
		}
		if fd := md.Fields().ByNumber(num); fd != nil && fd.Kind() == protoreflect.StringKind &&
			!fd.IsList() && wt == protowire.BytesType {
			s, _ := protowire.ConsumeBytes(in[n:])
			strs[fd] = s // the last one wins, as in nanopb
		} else {
			rest = append(rest, in[:n+v]...)
		}
		in = in[n+v:]
	}
	if err := proto.Unmarshal(rest, m); err != nil {
		return false
	}
	r := m.ProtoReflect()
	for fd, s := range strs {
		r.Set(fd, protoreflect.ValueOfString(string(s)))
	}
	return true
}

// nanopbField is what the firmware's generated C struct (firmware 2.7.26,
// src/mesh/generated/meshtastic/*.pb.h) holds of a field, where that is less
// than the protobuf type allows. Fields not listed hold their protobuf type:
// 32-bit integers, unlimited counts.
type nanopbField struct {
	maxLen   int    // char[maxLen+1] (string, with its NUL) or bytes of at most maxLen
	fixedLen int    // FIXED_LENGTH_BYTES: exactly fixedLen bytes, or none
	maxCount int    // a repeated field's array size
	maxUint  uint64 // uint16_t or uint8_t in place of a uint32
	int8     bool   // int8_t in place of an int32
}

var nanopbFields = func() map[protoreflect.FullName]nanopbField {
	f := func(m proto.Message, name protoreflect.Name) protoreflect.FullName {
		return m.ProtoReflect().Descriptor().Fields().ByName(name).FullName()
	}
	return map[protoreflect.FullName]nanopbField{
		f(&meshpb.User{}, "id"):                           {maxLen: 15},  // char id[16]
		f(&meshpb.User{}, "long_name"):                    {maxLen: 39},  // char long_name[40]
		f(&meshpb.User{}, "short_name"):                   {maxLen: 4},   // char short_name[5]
		f(&meshpb.User{}, "macaddr"):                      {fixedLen: 6}, // pb_byte_t macaddr[6]
		f(&meshpb.User{}, "public_key"):                   {maxLen: 32},  // PB_BYTES_ARRAY_T(32)
		f(&meshpb.Waypoint{}, "name"):                     {maxLen: 29},  // char name[30]
		f(&meshpb.Waypoint{}, "description"):              {maxLen: 99},  // char description[100]
		f(&meshpb.NeighborInfo{}, "neighbors"):            {maxCount: 10},
		f(&meshpb.RouteDiscovery{}, "route"):              {maxCount: 8},
		f(&meshpb.RouteDiscovery{}, "snr_towards"):        {maxCount: 8, int8: true},
		f(&meshpb.RouteDiscovery{}, "route_back"):         {maxCount: 8},
		f(&meshpb.RouteDiscovery{}, "snr_back"):           {maxCount: 8, int8: true},
		f(&meshpb.EnvironmentMetrics{}, "iaq"):            {maxUint: math.MaxUint16},
		f(&meshpb.EnvironmentMetrics{}, "wind_direction"): {maxUint: math.MaxUint16},
		f(&meshpb.EnvironmentMetrics{}, "soil_moisture"):  {maxUint: math.MaxUint8},
	}
}()

// nanopbAccepts reports whether nanopb decodes b as md: well-formed, every
// known field in its wire type (or packed, for a repeated scalar), strings,
// bytes and arrays within their C sizes, varints within their C integers
// ("integer too large"), unknown fields skippable (no groups). Fields our
// schema does not model are unknown here and only skipped.
func nanopbAccepts(b []byte, md protoreflect.MessageDescriptor) bool {
	counts := map[protowire.Number]int{}
	for len(b) > 0 {
		num, wt, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		fd := md.Fields().ByNumber(num)
		if fd == nil {
			if n = nanopbSkip(num, wt, b); n < 0 {
				return false
			}
			b = b[n:]
			continue
		}
		lim := nanopbFields[fd.FullName()]
		want := wireType(fd.Kind())
		switch {
		case wt == protowire.BytesType && want != protowire.BytesType && fd.IsList():
			v, n := protowire.ConsumeBytes(b) // a packed array
			if n < 0 {
				return false
			}
			b = b[n:]
			for len(v) > 0 {
				m := nanopbScalar(v, want, fd.Kind(), lim)
				if m < 0 {
					return false
				}
				v = v[m:]
				counts[num]++
			}
		case wt != want:
			return false
		case want == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			switch fd.Kind() {
			case protoreflect.StringKind, protoreflect.BytesKind:
				if lim.maxLen > 0 && len(v) > lim.maxLen ||
					lim.fixedLen > 0 && len(v) != 0 && len(v) != lim.fixedLen {
					return false
				}
			case protoreflect.MessageKind:
				if !nanopbAccepts(v, fd.Message()) {
					return false
				}
			}
			counts[num]++
		default:
			m := nanopbScalar(b, want, fd.Kind(), lim)
			if m < 0 {
				return false
			}
			b = b[m:]
			counts[num]++
		}
		if fd.IsList() && lim.maxCount > 0 && counts[num] > lim.maxCount {
			return false
		}
	}
	return true
}

// nanopbSkip skips an unknown field's value as nanopb's pb_skip_field does,
// which knows no groups; it returns the length consumed, or a negative number.
func nanopbSkip(num protowire.Number, wt protowire.Type, b []byte) int {
	if wt == protowire.StartGroupType || wt == protowire.EndGroupType {
		return -1
	}
	return protowire.ConsumeFieldValue(num, wt, b)
}

func wireType(k protoreflect.Kind) protowire.Type {
	switch k {
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		return protowire.Fixed32Type
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		return protowire.Fixed64Type
	case protoreflect.StringKind, protoreflect.BytesKind, protoreflect.MessageKind:
		return protowire.BytesType
	case protoreflect.GroupKind:
		return protowire.StartGroupType
	}
	return protowire.VarintType
}

// nanopbScalar consumes one scalar of wire type wt, checking a varint
// against the C integer it is stored in as nanopb's pb_dec_varint,
// pb_dec_uvarint and pb_dec_svarint do. It returns the length consumed, or a
// negative number.
func nanopbScalar(b []byte, wt protowire.Type, k protoreflect.Kind, lim nanopbField) int {
	switch wt {
	case protowire.Fixed32Type:
		_, n := protowire.ConsumeFixed32(b)
		return n
	case protowire.Fixed64Type:
		_, n := protowire.ConsumeFixed64(b)
		return n
	case protowire.VarintType:
	default:
		return -1
	}
	v, n := protowire.ConsumeVarint(b)
	if n < 0 {
		return n
	}
	ok := true
	switch k {
	case protoreflect.Uint32Kind, protoreflect.EnumKind: // uint32_t, or a 32-bit enum
		max := uint64(math.MaxUint32)
		if lim.maxUint != 0 {
			max = lim.maxUint
		}
		ok = v <= max
	case protoreflect.Int32Kind: // read as int32_t first: only narrower C types overflow
		if lim.int8 {
			x := int32(v)
			ok = x >= math.MinInt8 && x <= math.MaxInt8
		}
	case protoreflect.Sint32Kind:
		x := protowire.DecodeZigZag(v)
		ok = x >= math.MinInt32 && x <= math.MaxInt32
	}
	if !ok {
		return -1
	}
	return n
}

// ---------------------------------------------------------------------------
// The firmware's JSON library (src/serialization/JSON.cpp, JSONValue.cpp)
// ---------------------------------------------------------------------------

// A firmware JSON value is one of: fwNull{}, bool, float64 (every number is a
// double), string (raw bytes), []any, map[string]any.
type fwNull struct{}

// appendFirmwareJSON writes v as JSONValue::Stringify does without pretty
// printing: object keys in byte order (a std::map), numbers as %.15g with
// NaN and infinities as null, strings as appendFirmwareString.
func appendFirmwareJSON(b []byte, v any) []byte {
	switch v := v.(type) {
	case fwNull:
		return append(b, "null"...)
	case bool:
		return strconv.AppendBool(b, v)
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return append(b, "null"...)
		}
		// C++ ostream with precision 15 and the default float field: %.15g.
		return strconv.AppendFloat(b, v, 'g', 15, 64)
	case string:
		return appendFirmwareString(b, v)
	case []any:
		b = append(b, '[')
		for i, e := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendFirmwareJSON(b, e)
		}
		return append(b, ']')
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendFirmwareString(b, k)
			b = append(b, ':')
			b = appendFirmwareJSON(b, v[k])
		}
		return append(b, '}')
	}
	panic(fmt.Sprintf("mesh: no firmware JSON form for %T", v))
}

// appendFirmwareString quotes s as JSONValue::StringifyString does on the
// ESP32 (where char is unsigned): ", \ and / get a backslash; backspace,
// form feed, newline, carriage return and tab their short escapes; the other
// bytes below 0x20 and DEL \u00xx in lower-case hex; everything else as it
// is. A byte that does not belong to a UTF-8 sequence becomes U+FFFD.
func appendFirmwareString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '"' || c == '\\' || c == '/':
			b = append(b, '\\', c)
		case c == '\b':
			b = append(b, `\b`...)
		case c == '\f':
			b = append(b, `\f`...)
		case c == '\n':
			b = append(b, `\n`...)
		case c == '\r':
			b = append(b, `\r`...)
		case c == '\t':
			b = append(b, `\t`...)
		case c < 0x20 || c == 0x7f:
			b = append(b, `\u00`...)
			b = append(b, "0123456789abcdef"[c>>4], "0123456789abcdef"[c&0xf])
		case c < utf8.RuneSelf:
			b = append(b, c)
		default:
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size <= 1 {
				b = utf8.AppendRune(b, utf8.RuneError)
				i++
				continue
			}
			b = append(b, s[i:i+size]...)
			i += size
			continue
		}
		i++
	}
	return append(b, '"')
}

// parseFirmwareJSON parses s (a C string: no NUL inside) as JSON::Parse
// does, with the ESP32's unsigned char. Its rules differ from the JSON
// standard's: true, false and null in any letter case; a tab is allowed
// inside strings; \uXXXX keeps only the low byte of the code; the opening
// quote of an object key is skipped without being checked; a repeated key
// keeps its last value; numbers are added up digit by digit in doubles.
func parseFirmwareJSON(s []byte) (any, bool) {
	p := fwParser{s: s}
	if !p.skipSpace() {
		return nil, false
	}
	v, ok := p.value(0)
	if !ok || p.skipSpace() {
		return nil, false
	}
	return v, true
}

type fwParser struct {
	s []byte
	i int
}

// peek returns the current byte, 0 at the end (the C string's terminator).
func (p *fwParser) peek() byte {
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

// skipSpace skips spaces, tabs, CRs and LFs and reports whether anything is
// left.
func (p *fwParser) skipSpace() bool {
	for {
		switch p.peek() {
		case ' ', '\t', '\r', '\n':
			p.i++
			continue
		}
		return p.i < len(p.s)
	}
}

// literal reports whether word (lower case) follows, in any ASCII letter
// case (strncasecmp).
func (p *fwParser) literal(word string) bool {
	if len(p.s)-p.i < len(word) {
		return false
	}
	for j := 0; j < len(word); j++ {
		c := p.s[p.i+j]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != word[j] {
			return false
		}
	}
	return true
}

// maxFirmwareJSONDepth bounds the recursion. A text payload has at most 233
// bytes, so the firmware never nests deeper than that.
const maxFirmwareJSONDepth = 256

func (p *fwParser) value(depth int) (any, bool) {
	if depth > maxFirmwareJSONDepth {
		return nil, false
	}
	c := p.peek()
	switch {
	case c == '"':
		p.i++
		s, ok := p.str()
		return s, ok
	case p.literal("true"):
		p.i += 4
		return true, true
	case p.literal("false"):
		p.i += 5
		return false, true
	case p.literal("null"):
		p.i += 4
		return fwNull{}, true
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	case c == '{':
		p.i++
		obj := map[string]any{}
		for p.peek() != 0 {
			if !p.skipSpace() {
				return nil, false
			}
			if len(obj) == 0 && p.peek() == '}' {
				p.i++
				return obj, true
			}
			p.i++ // the key's opening quote, whatever it is
			key, ok := p.str()
			if !ok || !p.skipSpace() || p.peek() != ':' {
				return nil, false
			}
			p.i++
			if !p.skipSpace() {
				return nil, false
			}
			v, ok := p.value(depth + 1)
			if !ok {
				return nil, false
			}
			obj[key] = v
			if !p.skipSpace() {
				return nil, false
			}
			switch p.peek() {
			case '}':
				p.i++
				return obj, true
			case ',':
				p.i++
			default:
				return nil, false
			}
		}
		return nil, false
	case c == '[':
		p.i++
		arr := []any{}
		for p.peek() != 0 {
			if !p.skipSpace() {
				return nil, false
			}
			if len(arr) == 0 && p.peek() == ']' {
				p.i++
				return arr, true
			}
			v, ok := p.value(depth + 1)
			if !ok {
				return nil, false
			}
			arr = append(arr, v)
			if !p.skipSpace() {
				return nil, false
			}
			switch p.peek() {
			case ']':
				p.i++
				return arr, true
			case ',':
				p.i++
			default:
				return nil, false
			}
		}
		return nil, false
	}
	return nil, false
}

// str reads the rest of a string after its opening quote (JSON::ExtractString).
func (p *fwParser) str() (string, bool) {
	var out []byte
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '\\':
			p.i++
			switch p.peek() {
			case '"', '\\', '/':
				c = p.peek()
			case 'b':
				c = '\b'
			case 'f':
				c = '\f'
			case 'n':
				c = '\n'
			case 'r':
				c = '\r'
			case 't':
				c = '\t'
			case 'u':
				if len(p.s)-p.i < 5 {
					return "", false
				}
				c = 0
				for range 4 {
					p.i++
					h := p.s[p.i]
					switch {
					case h >= '0' && h <= '9':
						h -= '0'
					case h >= 'A' && h <= 'F':
						h -= 'A' - 10
					case h >= 'a' && h <= 'f':
						h -= 'a' - 10
					default:
						return "", false
					}
					c = c<<4 | h // a char: only the low byte stays
				}
			default:
				return "", false
			}
		case c == '"':
			p.i++
			return string(out), true
		case c < ' ' && c != '\t':
			return "", false
		}
		out = append(out, c)
		p.i++
	}
	return "", false
}

// number reads a number as JSONValue::Parse does: the integer and fraction
// digits summed in doubles (so "0.1" is 0.1 but long fractions may differ in
// the last bit from a correctly rounded parse), then multiplied or divided by
// ten once per unit of the exponent, then negated.
func (p *fwParser) number() (any, bool) {
	neg := p.peek() == '-'
	if neg {
		p.i++
	}
	var x float64
	switch c := p.peek(); {
	case c == '0':
		p.i++
	case c >= '1' && c <= '9':
		x = p.digits()
	default:
		return nil, false
	}
	if p.peek() == '.' {
		p.i++
		if c := p.peek(); c < '0' || c > '9' {
			return nil, false
		}
		frac, factor := 0.0, 0.1
		for c := p.peek(); c >= '0' && c <= '9'; c = p.peek() {
			// The conversions keep each step a separately rounded double
			// (no fused multiply-add), as on the firmware.
			frac = frac + float64(float64(c-'0')*factor)
			factor = float64(factor * 0.1)
			p.i++
		}
		x = x + frac
	}
	if c := p.peek(); c == 'e' || c == 'E' {
		p.i++
		negExp := false
		if c := p.peek(); c == '-' || c == '+' {
			negExp = c == '-'
			p.i++
		}
		if c := p.peek(); c < '0' || c > '9' {
			return nil, false
		}
		exp := p.digits()
		for i := 0.0; i < exp; i++ {
			if negExp {
				x = x / 10
			} else {
				x = x * 10
			}
			if x == 0 || math.IsInf(x, 0) {
				break // nothing changes any more (the firmware loops on)
			}
		}
	}
	if neg {
		x = x * -1
	}
	return x, true
}

// digits reads decimal digits into a double as JSON::ParseInt does.
func (p *fwParser) digits() float64 {
	x := 0.0
	for c := p.peek(); c >= '0' && c <= '9'; c = p.peek() {
		x = float64(x*10) + float64(c-'0')
		p.i++
	}
	return x
}

// Downlink "type" values.
const (
	DownlinkSendText     = "sendtext"
	DownlinkSendPosition = "sendposition"
)

// Downlink is a send request parsed from the firmware's JSON downlink form.
type Downlink struct {
	Type     string       // "sendtext" or "sendposition"
	To       uint32       // Broadcast when absent
	Channel  uint32       // local channel index, 0 when absent
	HopLimit uint32       // 0 when absent (the radio's default applies)
	Data     *meshpb.Data // TEXT_MESSAGE_APP with the text, or POSITION_APP with a marshalled Position
}

const maxChannelIndex = 7
const maxHopLimit = 7

// ParseDownlink parses and checks a JSON downlink for the gateway with node
// number gateway. The message must be exactly one JSON object:
//
//	{"type": "sendtext", "payload": "hello", "to": 1234, "channel": 0, "hopLimit": 3}
//	{"type": "sendposition", "payload": {"latitude_i": 525200000, "longitude_i": 134050000, "altitude": 34, "time": 1700000000}}
//
// "from", if present, must be the gateway's node number (the firmware
// requires it; a missing "from" is accepted here). "sender", if present, must
// not be the gateway's own id: that is the gateway's own uplink coming back.
// "to" defaults to Broadcast, "channel" (0-7) and "hopLimit" (0-7) to 0.
// Numbers must be written as plain integers. Other keys are ignored.
//
// Error messages name the offending key and what is expected; they quote at
// most a short excerpt of a value, never the whole message.
func ParseDownlink(b []byte, gateway uint32) (Downlink, error) {
	if !utf8.Valid(b) {
		return Downlink{}, errors.New("json downlink: message is not valid UTF-8; expected a UTF-8 JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		if errors.Is(err, io.EOF) {
			return Downlink{}, errors.New("json downlink: message is empty; expected a JSON object")
		}
		return Downlink{}, fmt.Errorf("json downlink: malformed JSON (%v); expected a JSON object", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Downlink{}, errors.New("json downlink: unexpected data after the JSON object; expected exactly one JSON object")
	}
	m, ok := v.(map[string]any)
	if !ok {
		return Downlink{}, fmt.Errorf("json downlink: message is %s; expected a JSON object", jsonKind(v))
	}

	tv, ok := m["type"]
	if !ok {
		return Downlink{}, errors.New(`json downlink: missing "type"; expected "sendtext" or "sendposition"`)
	}
	typ, ok := tv.(string)
	if !ok {
		return Downlink{}, fmt.Errorf(`json downlink: "type" is %s; expected the string "sendtext" or "sendposition"`, jsonKind(tv))
	}

	if fv, ok := m["from"]; ok {
		from, err := uintField(fv, "from", math.MaxUint32, "the gateway's node number")
		if err != nil {
			return Downlink{}, err
		}
		if from != gateway {
			return Downlink{}, fmt.Errorf(`json downlink: "from" is %d (%s) but this gateway is %d (%s); "from" must be the gateway's own node number, or be left out`,
				from, NodeID(from), gateway, NodeID(gateway))
		}
	}
	if sv, ok := m["sender"]; ok {
		s, ok := sv.(string)
		if !ok {
			return Downlink{}, fmt.Errorf(`json downlink: "sender" is %s; expected a node id string such as "!a1b2c3d4"`, jsonKind(sv))
		}
		if strings.EqualFold(s, NodeID(gateway)) {
			return Downlink{}, fmt.Errorf(`json downlink: "sender" is this gateway's own id %s, so this is the gateway's own uplink coming back; dropped to avoid a loop`, NodeID(gateway))
		}
	}

	if typ != DownlinkSendText && typ != DownlinkSendPosition {
		return Downlink{}, fmt.Errorf(`json downlink: unknown "type" %s; expected "sendtext" or "sendposition"`, shortQuote(typ))
	}
	dl := Downlink{Type: typ, To: Broadcast}

	if tv, ok := m["to"]; ok {
		to, err := uintField(tv, "to", math.MaxUint32, "a node number; leave it out to broadcast")
		if err != nil {
			return Downlink{}, err
		}
		if to == 0 {
			return Downlink{}, errors.New(`json downlink: "to" is 0, which is not a node number; expected a node number, or leave "to" out to broadcast`)
		}
		dl.To = to
	}
	if cv, ok := m["channel"]; ok {
		ch, err := uintField(cv, "channel", maxChannelIndex, "a local channel index")
		if err != nil {
			return Downlink{}, err
		}
		dl.Channel = ch
	}
	if hv, ok := m["hopLimit"]; ok {
		hl, err := uintField(hv, "hopLimit", maxHopLimit, "hops; leave it out for the radio's default")
		if err != nil {
			return Downlink{}, err
		}
		dl.HopLimit = hl
	}

	pv, ok := m["payload"]
	if !ok {
		if typ == DownlinkSendText {
			return Downlink{}, errors.New(`json downlink: missing "payload"; a sendtext downlink needs the text as a JSON string`)
		}
		return Downlink{}, errors.New(`json downlink: missing "payload"; a sendposition downlink needs an object with latitude_i and longitude_i`)
	}
	var err error
	if typ == DownlinkSendText {
		dl.Data, err = textData(pv)
	} else {
		dl.Data, err = positionData(pv)
	}
	if err != nil {
		return Downlink{}, err
	}
	return dl, nil
}

// ErrTextTooLong is in ParseDownlink's error for a text longer than
// topics.MaxTextBytes: a request too large for one packet, not a
// malformed one.
var ErrTextTooLong = fmt.Errorf("at most %d bytes (UTF-8) fit, split longer messages", topics.MaxTextBytes)

func textData(pv any) (*meshpb.Data, error) {
	s, ok := pv.(string)
	if !ok {
		return nil, fmt.Errorf(`json downlink: "payload" is %s; a sendtext downlink needs the text as a JSON string`, jsonKind(pv))
	}
	switch {
	case s == "":
		return nil, fmt.Errorf(`json downlink: "payload" text is empty; expected 1 to %d bytes of text`, topics.MaxTextBytes)
	case len(s) > topics.MaxTextBytes:
		return nil, fmt.Errorf(`json downlink: "payload" text is %d bytes; %w`, len(s), ErrTextTooLong)
	case !utf8.ValidString(s):
		return nil, errors.New(`json downlink: "payload" text is not valid UTF-8`)
	}
	return &meshpb.Data{Portnum: meshpb.PortNum_TEXT_MESSAGE_APP, Payload: []byte(s)}, nil
}

func positionData(pv any) (*meshpb.Data, error) {
	obj, ok := pv.(map[string]any)
	if !ok {
		return nil, fmt.Errorf(`json downlink: "payload" is %s; a sendposition downlink needs an object with latitude_i and longitude_i`, jsonKind(pv))
	}
	req := func(key string, limit int32, what string) (int32, error) {
		v, ok := obj[key]
		if !ok {
			return 0, fmt.Errorf(`json downlink: sendposition "payload" has no %q; expected %s`, key, what)
		}
		return intField(v, "payload."+key, -limit, limit, what)
	}
	lat, err := req("latitude_i", 90e7, "latitude in degrees × 1e7")
	if err != nil {
		return nil, err
	}
	lon, err := req("longitude_i", 180e7, "longitude in degrees × 1e7")
	if err != nil {
		return nil, err
	}
	pos := &meshpb.Position{LatitudeI: &lat, LongitudeI: &lon}
	if v, ok := obj["altitude"]; ok {
		alt, err := intField(v, "payload.altitude", math.MinInt32, math.MaxInt32, "metres above sea level")
		if err != nil {
			return nil, err
		}
		pos.Altitude = &alt
	}
	if v, ok := obj["time"]; ok {
		t, err := uintField(v, "payload.time", math.MaxUint32, "epoch seconds")
		if err != nil {
			return nil, err
		}
		pos.Time = t
	}
	b, err := proto.Marshal(pos)
	if err != nil {
		return nil, fmt.Errorf("json downlink: encode position: %v", err)
	}
	return &meshpb.Data{Portnum: meshpb.PortNum_POSITION_APP, Payload: b}, nil
}

// plainInteger reports whether a JSON number is written as an integer: an
// optional minus sign and digits, without fraction or exponent.
func plainInteger(s string) bool {
	s = strings.TrimPrefix(s, "-")
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func uintField(v any, key string, max uint32, what string) (uint32, error) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, fmt.Errorf("json downlink: %q is %s; expected a whole number from 0 to %d (%s)", key, jsonKind(v), max, what)
	}
	s := string(n)
	u, err := strconv.ParseUint(s, 10, 32)
	if !plainInteger(s) || err != nil || u > uint64(max) {
		return 0, fmt.Errorf("json downlink: %q is %s; expected a whole number from 0 to %d (%s)", key, shortValue(s), max, what)
	}
	return uint32(u), nil
}

func intField(v any, key string, min, max int32, what string) (int32, error) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, fmt.Errorf("json downlink: %q is %s; expected a whole number from %d to %d (%s)", key, jsonKind(v), min, max, what)
	}
	s := string(n)
	i, err := strconv.ParseInt(s, 10, 32)
	if !plainInteger(s) || err != nil || i < int64(min) || i > int64(max) {
		return 0, fmt.Errorf("json downlink: %q is %s; expected a whole number from %d to %d (%s)", key, shortValue(s), min, max, what)
	}
	return int32(i), nil
}

// jsonKind describes the JSON type of a value decoded with UseNumber, with
// its article: "a number", "an object", "null".
func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("a %T", v)
}

const maxQuoted = 32

// shortValue returns s cut to a length fit for a log line.
func shortValue(s string) string {
	if len(s) <= maxQuoted {
		return s
	}
	return s[:cutAt(s)] + "…"
}

// shortQuote quotes s for an error message, cut to a length fit for a log
// line.
func shortQuote(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:cutAt(s)]) + "…"
}

// cutAt returns where to cut a long s: at most maxQuoted bytes, on a rune
// boundary.
func cutAt(s string) int {
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return cut
}
