package mesh

// The firmware's JSON forms (firmware 2.7.26 and older, §3.7 and §3.8 of the
// wire reference): the uplink object a gateway publishes under
// <root>/2/json/<channel>/<gateway> for a decoded packet, and the downlink
// object ("sendtext", "sendposition") it accepts back. Newer firmware no
// longer produces JSON, so the bridge builds it itself from decoded packets.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// JSON "type" values of the uplink form.
const (
	jsonTypeText         = "text"
	jsonTypeTelemetry    = "telemetry"
	jsonTypeNodeInfo     = "nodeinfo"
	jsonTypePosition     = "position"
	jsonTypeWaypoint     = "waypoint"
	jsonTypeNeighborInfo = "neighborinfo"
	jsonTypeTraceroute   = "traceroute"
	jsonTypeDetection    = "detection"
	jsonTypePaxcounter   = "paxcounter"
)

// JSONUplink renders a decoded packet in the firmware 2.7 JSON uplink form
// (MeshPacketSerializer::JsonSerialize). gateway is the node number of the
// publishing radio; it becomes "sender". longName maps node numbers to long
// names for traceroute routes; it may be nil, and "" means unknown.
//
// Packets on ports the firmware does not render get "type": "" and no
// "payload", as the firmware does. A payload that does not decode as the
// port's protobuf message is an error. Keys come out sorted, so the output is
// deterministic.
func JSONUplink(p *meshpb.MeshPacket, gateway uint32, longName func(uint32) string) ([]byte, error) {
	d := p.GetDecoded()
	if d == nil {
		return nil, errors.New("json uplink: packet is not decoded (encrypted or empty); only decoded packets have a JSON form")
	}
	typ, payload, err := uplinkPayload(p, d, longName)
	if err != nil {
		return nil, err
	}
	obj := map[string]any{
		"id":        p.GetId(),
		"timestamp": p.GetRxTime(),
		"to":        p.GetTo(),
		"from":      p.GetFrom(),
		"channel":   p.GetChannel(),
		"type":      typ,
		"sender":    NodeID(gateway),
	}
	if payload != nil {
		obj["payload"] = payload
	}
	if rssi := p.GetRxRssi(); rssi != 0 {
		obj["rssi"] = rssi
	}
	if snr := p.GetRxSnr(); snr != 0 {
		if n, ok := float32Number(snr); ok {
			obj["snr"] = n
		}
	}
	if start, limit := p.GetHopStart(), p.GetHopLimit(); start != 0 && limit <= start {
		obj["hops_away"] = start - limit
		obj["hop_start"] = start
	}
	return marshalJSON(obj)
}

// uplinkPayload returns the "type" and "payload" for d. A nil payload means
// the key is left out.
func uplinkPayload(p *meshpb.MeshPacket, d *meshpb.Data, longName func(uint32) string) (string, any, error) {
	b := d.GetPayload()
	switch d.GetPortnum() {
	case meshpb.PortNum_TEXT_MESSAGE_APP:
		// Firmware quirk: text that is itself JSON is embedded as JSON.
		if utf8.Valid(b) && json.Valid(b) {
			return jsonTypeText, json.RawMessage(bytes.Clone(b)), nil
		}
		return jsonTypeText, map[string]any{"text": string(b)}, nil

	case meshpb.PortNum_DETECTION_SENSOR_APP:
		return jsonTypeDetection, map[string]any{"text": string(b)}, nil

	case meshpb.PortNum_TELEMETRY_APP:
		var t meshpb.Telemetry
		if err := unmarshalPayload(b, &t, jsonTypeTelemetry); err != nil {
			return "", nil, err
		}
		return jsonTypeTelemetry, telemetryPayload(&t), nil

	case meshpb.PortNum_NODEINFO_APP:
		var u meshpb.User
		if err := unmarshalPayload(b, &u, jsonTypeNodeInfo); err != nil {
			return "", nil, err
		}
		return jsonTypeNodeInfo, map[string]any{
			"id":        u.GetId(),
			"longname":  u.GetLongName(),
			"shortname": u.GetShortName(),
			"hardware":  int32(u.GetHwModel()),
			"role":      int32(u.GetRole()),
		}, nil

	case meshpb.PortNum_POSITION_APP:
		var pos meshpb.Position
		if err := unmarshalPayload(b, &pos, jsonTypePosition); err != nil {
			return "", nil, err
		}
		return jsonTypePosition, positionPayload(&pos), nil

	case meshpb.PortNum_WAYPOINT_APP:
		var w meshpb.Waypoint
		if err := unmarshalPayload(b, &w, jsonTypeWaypoint); err != nil {
			return "", nil, err
		}
		return jsonTypeWaypoint, map[string]any{
			"id":          w.GetId(),
			"name":        w.GetName(),
			"description": w.GetDescription(),
			"expire":      w.GetExpire(),
			"locked_to":   w.GetLockedTo(),
			"latitude_i":  w.GetLatitudeI(),
			"longitude_i": w.GetLongitudeI(),
		}, nil

	case meshpb.PortNum_NEIGHBORINFO_APP:
		var ni meshpb.NeighborInfo
		if err := unmarshalPayload(b, &ni, jsonTypeNeighborInfo); err != nil {
			return "", nil, err
		}
		neighbors := make([]any, 0, len(ni.GetNeighbors()))
		for _, n := range ni.GetNeighbors() {
			neighbors = append(neighbors, map[string]any{
				"node_id": n.GetNodeId(),
				"snr":     truncInt32(n.GetSnr()), // the firmware truncates to int
			})
		}
		return jsonTypeNeighborInfo, map[string]any{
			"node_id":                      ni.GetNodeId(),
			"node_broadcast_interval_secs": ni.GetNodeBroadcastIntervalSecs(),
			"last_sent_by_id":              ni.GetLastSentById(),
			"neighbors_count":              len(neighbors),
			"neighbors":                    neighbors,
		}, nil

	case meshpb.PortNum_TRACEROUTE_APP:
		if d.GetRequestId() == 0 {
			return "", nil, nil // only responses are rendered
		}
		var rd meshpb.RouteDiscovery
		if err := unmarshalPayload(b, &rd, jsonTypeTraceroute); err != nil {
			return "", nil, err
		}
		return jsonTypeTraceroute, traceroutePayload(p, &rd, longName), nil

	case meshpb.PortNum_PAXCOUNTER_APP:
		var pc meshpb.Paxcount
		if err := unmarshalPayload(b, &pc, jsonTypePaxcounter); err != nil {
			return "", nil, err
		}
		return jsonTypePaxcounter, map[string]any{
			"wifi_count": pc.GetWifi(),
			"ble_count":  pc.GetBle(),
			"uptime":     pc.GetUptime(),
		}, nil
	}
	return "", nil, nil
}

func unmarshalPayload(b []byte, m proto.Message, typ string) error {
	if err := proto.Unmarshal(b, m); err != nil {
		return fmt.Errorf("json uplink: %s payload (%d bytes) does not decode: %v", typ, len(b), err)
	}
	return nil
}

// telemetryPayload renders the variants the firmware renders, each field only
// when present. Other variants (local stats, health, host, ...) give an empty
// object, as in the firmware.
func telemetryPayload(t *meshpb.Telemetry) map[string]any {
	m := map[string]any{}
	if dm := t.GetDeviceMetrics(); dm != nil {
		putUint(m, "battery_level", dm.BatteryLevel)
		putFloat(m, "voltage", dm.Voltage)
		putFloat(m, "channel_utilization", dm.ChannelUtilization)
		putFloat(m, "air_util_tx", dm.AirUtilTx)
		putUint(m, "uptime_seconds", dm.UptimeSeconds)
	}
	if em := t.GetEnvironmentMetrics(); em != nil {
		putFloat(m, "temperature", em.Temperature)
		putFloat(m, "relative_humidity", em.RelativeHumidity)
		putFloat(m, "barometric_pressure", em.BarometricPressure)
		putFloat(m, "gas_resistance", em.GasResistance)
		putFloat(m, "voltage", em.Voltage)
		putFloat(m, "current", em.Current)
		putUint(m, "iaq", em.Iaq)
		putFloat(m, "distance", em.Distance)
		putFloat(m, "lux", em.Lux)
		putFloat(m, "white_lux", em.WhiteLux)
		putFloat(m, "ir_lux", em.IrLux)
		putFloat(m, "uv_lux", em.UvLux)
		putUint(m, "wind_direction", em.WindDirection)
		putFloat(m, "wind_speed", em.WindSpeed)
		putFloat(m, "weight", em.Weight)
		putFloat(m, "wind_gust", em.WindGust)
		putFloat(m, "wind_lull", em.WindLull)
		putFloat(m, "radiation", em.Radiation)
		putFloat(m, "rainfall_1h", em.Rainfall_1H)
		putFloat(m, "rainfall_24h", em.Rainfall_24H)
		putUint(m, "soil_moisture", em.SoilMoisture)
		putFloat(m, "soil_temperature", em.SoilTemperature)
	}
	if aq := t.GetAirQualityMetrics(); aq != nil {
		putUint(m, "pm10", aq.Pm10Standard)
		putUint(m, "pm25", aq.Pm25Standard)
		putUint(m, "pm100", aq.Pm100Standard)
		putUint(m, "pm10_e", aq.Pm10Environmental)
		putUint(m, "pm25_e", aq.Pm25Environmental)
		putUint(m, "pm100_e", aq.Pm100Environmental)
		putUint(m, "co2", aq.Co2)
		putFloat(m, "co2_temperature", aq.Co2Temperature)
		putFloat(m, "co2_humidity", aq.Co2Humidity)
		putFloat(m, "form_formaldehyde", aq.FormFormaldehyde)
		putFloat(m, "form_temperature", aq.FormTemperature)
		putFloat(m, "form_humidity", aq.FormHumidity)
	}
	if pm := t.GetPowerMetrics(); pm != nil {
		putFloat(m, "voltage_ch1", pm.Ch1Voltage)
		putFloat(m, "current_ch1", pm.Ch1Current)
		putFloat(m, "voltage_ch2", pm.Ch2Voltage)
		putFloat(m, "current_ch2", pm.Ch2Current)
		putFloat(m, "voltage_ch3", pm.Ch3Voltage)
		putFloat(m, "current_ch3", pm.Ch3Current)
	}
	return m
}

func positionPayload(pos *meshpb.Position) map[string]any {
	m := map[string]any{
		"latitude_i":  pos.GetLatitudeI(),
		"longitude_i": pos.GetLongitudeI(),
	}
	putNonZero(m, "time", pos.GetTime())
	putNonZero(m, "timestamp", pos.GetTimestamp())
	if alt := pos.GetAltitude(); alt != 0 {
		m["altitude"] = alt
	}
	putNonZero(m, "ground_speed", pos.GetGroundSpeed())
	putNonZero(m, "ground_track", pos.GetGroundTrack())
	putNonZero(m, "sats_in_view", pos.GetSatsInView())
	putNonZero(m, "PDOP", pos.GetPDOP())
	putNonZero(m, "HDOP", pos.GetHDOP())
	putNonZero(m, "VDOP", pos.GetVDOP())
	putNonZero(m, "precision_bits", pos.GetPrecisionBits())
	return m
}

// traceroutePayload follows the firmware: the forward route runs from the
// response's destination (the original requester) through the recorded hops
// to its source, the route back the other way; SNRs are in quarter dB.
func traceroutePayload(p *meshpb.MeshPacket, rd *meshpb.RouteDiscovery, longName func(uint32) string) map[string]any {
	name := func(n uint32) string {
		if longName != nil {
			if s := longName(n); s != "" {
				return s
			}
		}
		return "Unknown"
	}
	route := make([]string, 0, len(rd.GetRoute())+2)
	route = append(route, name(p.GetTo()))
	for _, n := range rd.GetRoute() {
		route = append(route, name(n))
	}
	route = append(route, name(p.GetFrom()))

	back := make([]string, 0, len(rd.GetRouteBack())+2)
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

func quarterDB(v []int32) []json.Number {
	out := make([]json.Number, 0, len(v))
	for _, q := range v {
		out = append(out, json.Number(strconv.FormatFloat(float64(q)/4, 'f', -1, 64)))
	}
	return out
}

func putUint(m map[string]any, key string, v *uint32) {
	if v != nil {
		m[key] = *v
	}
}

func putFloat(m map[string]any, key string, v *float32) {
	if v == nil {
		return
	}
	if n, ok := float32Number(*v); ok {
		m[key] = n
	}
}

func putNonZero(m map[string]any, key string, v uint32) {
	if v != 0 {
		m[key] = v
	}
}

// float32Number formats f with the fewest digits that round-trip as a
// float32, so 3.9 stays 3.9. NaN and infinities have no JSON form; ok is
// false for them and the caller leaves the key out.
func float32Number(f float32) (n json.Number, ok bool) {
	x := float64(f)
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "", false
	}
	return json.Number(strconv.FormatFloat(x, 'f', -1, 32)), true
}

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

// marshalJSON encodes v compactly without HTML escaping (the firmware does
// not escape <, > and &).
func marshalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("json uplink: encode: %v", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
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

func textData(pv any) (*meshpb.Data, error) {
	s, ok := pv.(string)
	if !ok {
		return nil, fmt.Errorf(`json downlink: "payload" is %s; a sendtext downlink needs the text as a JSON string`, jsonKind(pv))
	}
	switch {
	case s == "":
		return nil, fmt.Errorf(`json downlink: "payload" text is empty; expected 1 to %d bytes of text`, topics.MaxTextBytes)
	case len(s) > topics.MaxTextBytes:
		return nil, fmt.Errorf(`json downlink: "payload" text is %d bytes; at most %d bytes (UTF-8) fit, split longer messages`, len(s), topics.MaxTextBytes)
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
