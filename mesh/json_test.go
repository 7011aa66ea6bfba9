package mesh

import (
	"bytes"
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func pbBytes(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ptr[T any](v T) *T { return &v }

const (
	testGateway = 0xa1b2c3d4
	nodeAlice   = 0x0badcafe
	nodeBob     = 0x11223344
	nodeCarol   = 0x55667788
)

func testLongName(n uint32) string {
	switch n {
	case nodeAlice:
		return "Alice Base"
	case nodeBob:
		return "Bob Hilltop"
	}
	return ""
}

// packet builds a broadcast packet from Alice as heard over the radio, from
// a sender of firmware 2.5 or later (the bitfield is present, OK to MQTT).
func packet(port meshpb.PortNum, payload []byte, opts ...func(*meshpb.MeshPacket)) *meshpb.MeshPacket {
	p := &meshpb.MeshPacket{
		From:     nodeAlice,
		To:       Broadcast,
		Channel:  0,
		Id:       0x1a2b3c4d,
		RxTime:   ptr(uint32(1767225600)),
		RxSnr:    5.5,
		RxRssi:   ptr(int32(-87)),
		HopStart: 3,
		HopLimit: 1,
		PayloadVariant: &meshpb.MeshPacket_Decoded{Decoded: &meshpb.Data{
			Portnum:  port,
			Payload:  payload,
			Bitfield: ptr(uint32(1)),
		}},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

// noRadio makes p a packet without reception data from a sender older than
// firmware 2.3: no rx_time, SNR, RSSI, hop_start or bitfield.
func noRadio(p *meshpb.MeshPacket) {
	p.RxTime, p.RxSnr, p.RxRssi, p.HopStart, p.HopLimit = nil, 0, nil, 0, 0
	if d := p.GetDecoded(); d != nil {
		d.Bitfield = nil
	}
}

func hops(start, limit uint32) func(*meshpb.MeshPacket) {
	return func(p *meshpb.MeshPacket) { p.HopStart, p.HopLimit = start, limit }
}

func noBitfield(p *meshpb.MeshPacket) { p.GetDecoded().Bitfield = nil }

func requestID(id uint32) func(*meshpb.MeshPacket) {
	return func(p *meshpb.MeshPacket) { p.GetDecoded().RequestId = id }
}

// wire builds a protobuf by hand, for payloads our generated types cannot
// express (messages our schema lacks, values beyond a field's C type).
type wire []byte

func (w wire) varint(num protowire.Number, v uint64) wire {
	return protowire.AppendVarint(protowire.AppendTag(w, num, protowire.VarintType), v)
}

func (w wire) bytes(num protowire.Number, b []byte) wire {
	return protowire.AppendBytes(protowire.AppendTag(w, num, protowire.BytesType), b)
}

// hardwareMessage is a remote_hardware.proto HardwareMessage (type 1,
// gpio_mask 2, gpio_value 3), which our schema does not model.
func hardwareMessage(typ, mask, value uint64) []byte {
	return wire(nil).varint(1, typ).varint(2, mask).varint(3, value)
}

func envTelemetry(em *meshpb.EnvironmentMetrics) *meshpb.Telemetry {
	return &meshpb.Telemetry{Time: 1767225600, Variant: &meshpb.Telemetry_EnvironmentMetrics{EnvironmentMetrics: em}}
}

func deviceTelemetry(dm *meshpb.DeviceMetrics) *meshpb.Telemetry {
	return &meshpb.Telemetry{Time: 1767225600, Variant: &meshpb.Telemetry_DeviceMetrics{DeviceMetrics: dm}}
}

// Firmware sources the golden cases cite (firmware 2.7.26, tag
// v2.7.26.54e0d8d): the serializer, its JSON library and the hop count.
const (
	fwSerialize = "src/serialization/MeshPacketSerializer.cpp MeshPacketSerializer::JsonSerialize"
	fwStringify = "src/serialization/JSONValue.cpp JSONValue::StringifyImpl/StringifyString"
	fwParse     = "src/serialization/JSON.cpp JSON::Parse, JSONValue.cpp JSONValue::Parse"
	fwHops      = "src/mesh/NodeDB.cpp getHopsAway"
	fwStructs   = "src/mesh/generated/meshtastic/*.pb.h (nanopb field sizes), pb_decode_from_bytes"
)

// uplinkGoldenCases are the golden cases of JSONUplink. Each golden file in
// testdata/json holds the exact bytes the firmware would publish (compact,
// as on the wire) and a newline; rule names the firmware rule it checks.
// Regenerate with go test -run TestJSONUplinkGolden -update, then review the
// diff against the rules.
func uplinkGoldenCases(t testing.TB) []struct {
	name, rule string
	p          *meshpb.MeshPacket
} {
	return []struct {
		name, rule string
		p          *meshpb.MeshPacket
	}{
		// --- The envelope: every packet ---
		{"text", fwSerialize + ": TEXT_MESSAGE_APP not JSON gives {\"text\":...}; envelope keys id, timestamp, to, from, channel, type, sender, rssi, snr (%.15g), hops_away, hop_start; " + fwStringify + ": \" \\ / and control characters escaped, DEL as \\u007f, UTF-8 kept",
			packet(meshpb.PortNum_TEXT_MESSAGE_APP, []byte("Hello mesh <&> ünïcödé 👋 \"q\" a/b c\\d\nnew\ttab\x01\x7f"))},
		{"text_dm_no_radio_fields", fwSerialize + ": rssi and snr only when non-zero, timestamp 0 without rx_time; " + fwHops + ": hop_start 0 without a bitfield (sender before 2.3) leaves hops_away and hop_start out",
			packet(meshpb.PortNum_TEXT_MESSAGE_APP, []byte("direct"), noRadio,
				func(p *meshpb.MeshPacket) { p.To, p.Channel = testGateway, 2 })},
		{"zero_hop", fwHops + ": hop_start 0 with a bitfield (sender 2.5 or later, sent with no hops) gives \"hops_away\":0,\"hop_start\":0",
			packet(meshpb.PortNum_TEXT_MESSAGE_APP, []byte("zero hop"), hops(0, 0))},
		{"zero_hop_hop_limit_above", fwHops + ": hop_limit above hop_start (0 < 2) leaves hops_away and hop_start out, bitfield or not",
			packet(meshpb.PortNum_TEXT_MESSAGE_APP, []byte("hop_limit above hop_start"), hops(0, 2))},
		{"direct_neighbour", fwHops + ": hop_start equal to hop_limit gives hops_away 0 and the non-zero hop_start",
			packet(meshpb.PortNum_TEXT_MESSAGE_APP, []byte("next door"), hops(7, 7), noBitfield)},
		{"text_bad_hops", fwHops + ": hop_limit above a non-zero hop_start leaves them out; " + fwStringify + ": a negative snr as %.15g",
			packet(meshpb.PortNum_TEXT_MESSAGE_APP, []byte("hop_limit above hop_start"),
				hops(3, 5), func(p *meshpb.MeshPacket) { p.RxSnr = -12.25 })},
		{"snr_float", fwSerialize + ": snr is the float rx_snr widened to double; " + fwStringify + ": %.15g shows the float's binary value",
			packet(meshpb.PortNum_TEXT_MESSAGE_APP, []byte("snr"), func(p *meshpb.MeshPacket) { p.RxSnr = 6.1 })},
		{"snr_nan", fwSerialize + ": rx_snr != 0 holds for NaN, so snr is written; " + fwStringify + ": NaN as null",
			packet(meshpb.PortNum_TEXT_MESSAGE_APP, []byte("snr"), func(p *meshpb.MeshPacket) { p.RxSnr = float32(math.NaN()) })},
		{"encrypted", fwSerialize + ": a packet that is not decoded keeps type \"\" and has no payload; " + fwHops + ": without decoded data only a non-zero hop_start counts",
			packet(meshpb.PortNum_UNKNOWN_APP, nil, func(p *meshpb.MeshPacket) {
				p.Channel = 8 // the channel hash
				p.PayloadVariant = &meshpb.MeshPacket_Encrypted{Encrypted: []byte{1, 2, 3}}
			})},
		{"encrypted_zero_hop", fwHops + ": an encrypted packet with hop_start 0 has no bitfield to read, so no hops_away",
			packet(meshpb.PortNum_UNKNOWN_APP, nil, hops(0, 0), func(p *meshpb.MeshPacket) {
				p.PayloadVariant = &meshpb.MeshPacket_Encrypted{Encrypted: []byte{1, 2, 3}}
			})},
		{"unsupported_port", fwSerialize + ": default case (ROUTING_APP and every port not listed): type \"\", no payload",
			packet(meshpb.PortNum_ROUTING_APP, []byte{0x18, 0x00})},

		// --- TEXT_MESSAGE_APP ---
		{"text_is_json", fwSerialize + ": a text JSON::Parse accepts becomes the payload itself; " + fwStringify + ": re-serialized, keys sorted, no spaces, / escaped",
			packet(meshpb.PortNum_TEXT_MESSAGE_APP, []byte(`{"temp": 21.5, "ok": true, "tags": ["a", "b"], "url": "http://x"}`))},
		{"text_json_quirks", fwParse + ": literals in any case, a raw tab in a string, \\u keeps the low byte, the last of a repeated key, numbers summed in doubles and printed as %.15g",
			packet(meshpb.PortNum_TEXT_MESSAGE_APP, []byte("{\"b\":[TRUE,nUlL,1.5e2,-0,0.1,12345678901234567890],\"a\":\"\\u0141\tx\",\"c\":1,\"c\":\"last\"}"))},
		{"text_json_scalar", fwParse + ": any JSON value, here a number, is the payload",
			packet(meshpb.PortNum_TEXT_MESSAGE_APP, []byte(" 42 "))},
		{"text_json_null", fwParse + ": the text null gives \"payload\":null",
			packet(meshpb.PortNum_TEXT_MESSAGE_APP, []byte("null"))},
		{"text_json_trailing", fwParse + ": data after the value is not JSON, so the text stays a text",
			packet(meshpb.PortNum_TEXT_MESSAGE_APP, []byte(`{"a":1} and more`))},
		{"text_empty", fwSerialize + ": an empty text is not JSON: {\"text\":\"\"}",
			packet(meshpb.PortNum_TEXT_MESSAGE_APP, nil)},
		{"text_nul", fwSerialize + ": the payload is read as a C string, up to its first NUL",
			packet(meshpb.PortNum_TEXT_MESSAGE_APP, []byte("hello\x00ignored"))},
		{"text_invalid_utf8", "our choice (the firmware copies the bytes through, making invalid JSON): a byte outside UTF-8 becomes U+FFFD",
			packet(meshpb.PortNum_TEXT_MESSAGE_APP, []byte("a\xffb\xf0\x9f"))},

		// --- POSITION_APP ---
		{"position", fwSerialize + ": POSITION_APP latitude_i and longitude_i always; time, timestamp, altitude, ground_speed, ground_track, sats_in_view, PDOP, HDOP, VDOP, precision_bits only when non-zero",
			packet(meshpb.PortNum_POSITION_APP, pbBytes(t, &meshpb.Position{
				LatitudeI:     ptr(int32(525200000)),
				LongitudeI:    ptr(int32(-134050000)),
				Altitude:      ptr(int32(-3)),
				Time:          1767225590,
				Timestamp:     1767225589,
				GroundSpeed:   ptr(uint32(0)), // present but zero: left out
				GroundTrack:   ptr(uint32(9000)),
				SatsInView:    9,
				PDOP:          180,
				HDOP:          95,
				VDOP:          3000000000, // written as a C int
				GpsAccuracy:   2500,       // not rendered
				PrecisionBits: 32,
			}))},
		{"position_empty", fwSerialize + ": POSITION_APP with nothing set still has latitude_i and longitude_i 0",
			packet(meshpb.PortNum_POSITION_APP, nil)},
		{"position_undecodable", fwSerialize + ": a payload nanopb refuses keeps type position, without payload",
			packet(meshpb.PortNum_POSITION_APP, []byte{0x0d, 0x01})},

		// --- NODEINFO_APP ---
		{"nodeinfo", fwSerialize + ": NODEINFO_APP id, longname, shortname (strings), hardware and role (int); public key and the rest not rendered",
			packet(meshpb.PortNum_NODEINFO_APP, pbBytes(t, &meshpb.User{
				Id:        NodeID(nodeAlice),
				LongName:  "Alice/Base 🏠",
				ShortName: "ALB",
				HwModel:   meshpb.HardwareModel(43),
				Role:      meshpb.Config_DeviceConfig_Role(2),
				PublicKey: bytes.Repeat([]byte{7}, 32),
			}))},
		{"nodeinfo_cut_utf8", fwStructs + ": nanopb does not check UTF-8, so a long name cut inside a character is still rendered (its stray bytes as U+FFFD, our choice)",
			packet(meshpb.PortNum_NODEINFO_APP, wire(nil).bytes(1, []byte("!0badcafe")).bytes(2, []byte("Alice \xf0\x9f\x8f")).bytes(3, []byte("AL")).varint(5, 43))},
		{"nodeinfo_long_name_too_long", fwStructs + ": long_name is char[40], so 40 bytes do not decode: type nodeinfo without payload",
			packet(meshpb.PortNum_NODEINFO_APP, pbBytes(t, &meshpb.User{Id: NodeID(nodeAlice), LongName: strings.Repeat("x", 40), ShortName: "X"}))},

		// --- TELEMETRY_APP ---
		{"telemetry_device", fwSerialize + ": device_metrics battery_level (int) when present, voltage, channel_utilization, air_util_tx (floats, %.15g) and uptime_seconds always",
			packet(meshpb.PortNum_TELEMETRY_APP, pbBytes(t, deviceTelemetry(&meshpb.DeviceMetrics{
				BatteryLevel:       ptr(uint32(101)),
				Voltage:            ptr(float32(3.9)),
				ChannelUtilization: ptr(float32(12.34)),
				AirUtilTx:          ptr(float32(0.5)),
				UptimeSeconds:      ptr(uint32(86400)),
			})))},
		{"telemetry_device_all_zero", fwSerialize + ": device_metrics with no field set still writes voltage, channel_utilization, air_util_tx and uptime_seconds as 0, and no battery_level",
			packet(meshpb.PortNum_TELEMETRY_APP, pbBytes(t, deviceTelemetry(&meshpb.DeviceMetrics{})))},
		{"telemetry_device_zero_battery", fwSerialize + ": a battery_level present as 0 is written",
			packet(meshpb.PortNum_TELEMETRY_APP, pbBytes(t, deviceTelemetry(&meshpb.DeviceMetrics{BatteryLevel: ptr(uint32(0)), Voltage: ptr(float32(0))})))},
		{"telemetry_environment", fwSerialize + ": environment_metrics fields only when present, a present 0 included",
			packet(meshpb.PortNum_TELEMETRY_APP, pbBytes(t, envTelemetry(&meshpb.EnvironmentMetrics{
				Temperature:        ptr(float32(21.3)),
				RelativeHumidity:   ptr(float32(45.5)),
				BarometricPressure: ptr(float32(1013.25)),
				Iaq:                ptr(uint32(50)),
				Lux:                ptr(float32(0)),
				WindDirection:      ptr(uint32(270)),
				SoilMoisture:       ptr(uint32(33)),
			})))},
		{"telemetry_environment_all", fwSerialize + ": all 22 environment_metrics keys, iaq, wind_direction and soil_moisture as unsigned ints",
			packet(meshpb.PortNum_TELEMETRY_APP, pbBytes(t, envTelemetry(&meshpb.EnvironmentMetrics{
				Temperature: ptr(float32(23.56)), RelativeHumidity: ptr(float32(65.43)), BarometricPressure: ptr(float32(1013.27)),
				GasResistance: ptr(float32(50.58)), Voltage: ptr(float32(3.34)), Current: ptr(float32(0.53)),
				Iaq: ptr(uint32(120)), Distance: ptr(float32(150.29)), Lux: ptr(float32(450.12)),
				WhiteLux: ptr(float32(380.95)), IrLux: ptr(float32(25.37)), UvLux: ptr(float32(15.68)),
				WindDirection: ptr(uint32(180)), WindSpeed: ptr(float32(5.52)), Weight: ptr(float32(75.56)),
				WindGust: ptr(float32(8.24)), WindLull: ptr(float32(2.13)), Radiation: ptr(float32(0.13)),
				Rainfall_1H: ptr(float32(2.57)), Rainfall_24H: ptr(float32(15.89)), SoilMoisture: ptr(uint32(85)),
				SoilTemperature: ptr(float32(-18.54)),
			})))},
		{"telemetry_environment_empty", fwSerialize + ": environment_metrics with nothing present gives an empty payload object",
			packet(meshpb.PortNum_TELEMETRY_APP, pbBytes(t, envTelemetry(&meshpb.EnvironmentMetrics{})))},
		{"telemetry_environment_iaq_overflow", fwStructs + ": iaq is a uint16_t, so 70000 does not decode (integer too large): type telemetry without payload",
			packet(meshpb.PortNum_TELEMETRY_APP, pbBytes(t, envTelemetry(&meshpb.EnvironmentMetrics{Iaq: ptr(uint32(70000))})))},
		{"telemetry_air_quality", fwSerialize + ": 2.7.26 air_quality_metrics keys pm10, pm25, pm100, co2 (unsigned), co2_temperature, co2_humidity, form_formaldehyde, form_temperature, form_humidity; no pm10_e/pm25_e/pm100_e (2.7.15) and no particle counts",
			packet(meshpb.PortNum_TELEMETRY_APP, pbBytes(t, &meshpb.Telemetry{
				Variant: &meshpb.Telemetry_AirQualityMetrics{AirQualityMetrics: &meshpb.AirQualityMetrics{
					Pm10Standard: ptr(uint32(0)), Pm25Standard: ptr(uint32(12)), Pm100Standard: ptr(uint32(20)),
					Pm10Environmental: ptr(uint32(11)), Pm25Environmental: ptr(uint32(13)), Pm100Environmental: ptr(uint32(21)),
					Particles_03Um: ptr(uint32(900)), Particles_100Um: ptr(uint32(1)),
					Co2: ptr(uint32(640)), Co2Temperature: ptr(float32(22.1)), Co2Humidity: ptr(float32(40)),
					FormFormaldehyde: ptr(float32(0.02)), FormHumidity: ptr(float32(39.5)), FormTemperature: ptr(float32(21.75)),
				}},
			}))},
		{"telemetry_power", fwSerialize + ": power_metrics voltage_ch1..current_ch3 when present",
			packet(meshpb.PortNum_TELEMETRY_APP, pbBytes(t, &meshpb.Telemetry{
				Variant: &meshpb.Telemetry_PowerMetrics{PowerMetrics: &meshpb.PowerMetrics{
					Ch1Voltage: ptr(float32(12.6)), Ch1Current: ptr(float32(-0.25)),
					Ch2Voltage: ptr(float32(0)), Ch3Current: ptr(float32(1.5)),
				}},
			}))},
		{"telemetry_local_stats", fwSerialize + ": a variant it does not render (local_stats) gives an empty payload object",
			packet(meshpb.PortNum_TELEMETRY_APP, pbBytes(t, &meshpb.Telemetry{
				Variant: &meshpb.Telemetry_LocalStats{LocalStats: &meshpb.LocalStats{UptimeSeconds: 5}},
			}))},
		{"telemetry_host_metrics", fwSerialize + ": host_metrics (a variant our schema lacks) gives an empty payload object too",
			packet(meshpb.PortNum_TELEMETRY_APP, wire(nil).bytes(8, wire(nil).varint(1, 3600)))},
		{"telemetry_undecodable", fwSerialize + ": telemetry nanopb refuses keeps type telemetry, without payload",
			packet(meshpb.PortNum_TELEMETRY_APP, []byte{0xff, 0xff, 0xff})},

		// --- NEIGHBORINFO_APP ---
		{"neighborinfo", fwSerialize + ": NEIGHBORINFO_APP node_id, node_broadcast_interval_secs, last_sent_by_id, neighbors_count, neighbors [{node_id, snr as (int), toward zero}]",
			packet(meshpb.PortNum_NEIGHBORINFO_APP, pbBytes(t, &meshpb.NeighborInfo{
				NodeId:                    nodeAlice,
				LastSentById:              nodeAlice,
				NodeBroadcastIntervalSecs: 14400,
				Neighbors: []*meshpb.Neighbor{
					{NodeId: nodeBob, Snr: 6.75, LastRxTime: 1767225000},
					{NodeId: nodeCarol, Snr: -3.5},
				},
			}))},
		{"neighborinfo_empty", fwSerialize + ": an empty NeighborInfo has every key, 0 and []",
			packet(meshpb.PortNum_NEIGHBORINFO_APP, nil)},
		{"neighborinfo_too_many", fwStructs + ": neighbors holds 10, so 11 do not decode: type neighborinfo without payload",
			packet(meshpb.PortNum_NEIGHBORINFO_APP, pbBytes(t, &meshpb.NeighborInfo{NodeId: nodeAlice,
				Neighbors: slices.Repeat([]*meshpb.Neighbor{{NodeId: nodeBob, Snr: 1}}, 11)}))},

		// --- TRACEROUTE_APP ---
		{"traceroute_response", fwSerialize + ": TRACEROUTE_APP with request_id: route from the packet's to through route to its from, route_back the other way, long names or Unknown; snr_towards and snr_back as float/4",
			packet(meshpb.PortNum_TRACEROUTE_APP, pbBytes(t, &meshpb.RouteDiscovery{
				// Alice traced Carol (name unknown) through Bob; Carol answers.
				Route:      []uint32{nodeBob},
				SnrTowards: []int32{24, -10},
				RouteBack:  []uint32{nodeBob},
				SnrBack:    []int32{13, -128},
			}), func(p *meshpb.MeshPacket) { p.From, p.To = nodeCarol, nodeAlice }, requestID(0x01020304))},
		{"traceroute_request", fwSerialize + ": TRACEROUTE_APP without request_id (a request) is not rendered: type \"\"",
			packet(meshpb.PortNum_TRACEROUTE_APP, pbBytes(t, &meshpb.RouteDiscovery{Route: []uint32{nodeBob}}),
				func(p *meshpb.MeshPacket) { p.To = nodeBob })},
		{"traceroute_snr_overflow", fwStructs + ": snr_towards is int8_t, so 128 does not decode: type traceroute without payload",
			packet(meshpb.PortNum_TRACEROUTE_APP, pbBytes(t, &meshpb.RouteDiscovery{SnrTowards: []int32{128}}), requestID(7))},

		// --- WAYPOINT_APP ---
		{"waypoint", fwSerialize + ": WAYPOINT_APP id, name, description, expire, locked_to, latitude_i, longitude_i, always (icon not rendered)",
			packet(meshpb.PortNum_WAYPOINT_APP, pbBytes(t, &meshpb.Waypoint{
				Id:          77,
				LatitudeI:   ptr(int32(525000000)),
				LongitudeI:  ptr(int32(134000000)),
				Expire:      1767300000,
				Name:        "Camp",
				Description: "Meeting point: tents 1/2",
				Icon:        0x1F3D5,
			}))},
		{"waypoint_empty", fwSerialize + ": an empty Waypoint still has every key",
			packet(meshpb.PortNum_WAYPOINT_APP, nil)},

		// --- DETECTION_SENSOR_APP, PAXCOUNTER_APP ---
		{"detection", fwSerialize + ": DETECTION_SENSOR_APP {\"text\": the payload as a C string}, never parsed as JSON",
			packet(meshpb.PortNum_DETECTION_SENSOR_APP, []byte(`{"alarm":true}`))},
		{"paxcounter", fwSerialize + ": PAXCOUNTER_APP (ESP32 builds) wifi_count, ble_count, uptime",
			packet(meshpb.PortNum_PAXCOUNTER_APP, pbBytes(t, &meshpb.Paxcount{Wifi: 12, Ble: 30, Uptime: 3600}))},

		// --- REMOTE_HARDWARE_APP ---
		{"remote_hardware_gpios_changed", fwSerialize + ": REMOTE_HARDWARE_APP GPIOS_CHANGED: type gpios_changed, gpio_value as a 32-bit unsigned int",
			packet(meshpb.PortNum_REMOTE_HARDWARE_APP, hardwareMessage(3, 0xff, 0x1_0000_0021))},
		{"remote_hardware_read_reply", fwSerialize + ": REMOTE_HARDWARE_APP READ_GPIOS_REPLY: type gpios_read_reply, gpio_value and gpio_mask",
			packet(meshpb.PortNum_REMOTE_HARDWARE_APP, hardwareMessage(5, 0x30, 0x20))},
		{"remote_hardware_write", fwSerialize + ": REMOTE_HARDWARE_APP other types (WRITE_GPIOS here): type \"\", no payload",
			packet(meshpb.PortNum_REMOTE_HARDWARE_APP, hardwareMessage(1, 0x30, 0x20))},
	}
}

func TestJSONUplinkGolden(t *testing.T) {
	cases := uplinkGoldenCases(t)
	seen := map[string]bool{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if seen[tc.name] {
				t.Fatalf("duplicate case name %q", tc.name)
			}
			seen[tc.name] = true
			out, err := JSONUplink(tc.p, testGateway, testLongName)
			if err != nil {
				t.Fatal(err)
			}
			if !json.Valid(out) || !utf8.Valid(out) {
				t.Fatalf("invalid JSON: %q", out)
			}
			again, _ := JSONUplink(tc.p, testGateway, testLongName)
			if !bytes.Equal(out, again) {
				t.Fatalf("output not deterministic:\n%s\n%s", out, again)
			}
			got := append(out, '\n')
			path := filepath.Join("testdata", "json", tc.name+".json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run TestJSONUplinkGolden -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the golden file\nrule: %s\ngot:  %s\nwant: %s", path, tc.rule, got, want)
			}
		})
	}
	t.Run("no stale golden files", func(t *testing.T) {
		names := map[string]bool{}
		for _, tc := range cases {
			names[tc.name] = true
		}
		files, err := filepath.Glob(filepath.Join("testdata", "json", "*.json"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			name := strings.TrimSuffix(filepath.Base(f), ".json")
			if !names[name] {
				if *update {
					if err := os.Remove(f); err != nil {
						t.Fatal(err)
					}
					continue
				}
				t.Errorf("%s has no case (run -update to remove it)", f)
			}
		}
	})
}

// TestJSONUplinkRules checks the firmware's rules one by one, by hand,
// without the golden files.
func TestJSONUplinkRules(t *testing.T) {
	decode := func(t *testing.T, p *meshpb.MeshPacket) map[string]any {
		t.Helper()
		out, err := JSONUplink(p, testGateway, testLongName)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		dec := json.NewDecoder(bytes.NewReader(out))
		dec.UseNumber()
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return m
	}
	num := func(v any) string { n, _ := v.(json.Number); return string(n) }
	contains := func(t *testing.T, p *meshpb.MeshPacket, wants ...string) {
		t.Helper()
		out, err := JSONUplink(p, testGateway, testLongName)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range wants {
			if !bytes.Contains(out, []byte(w)) {
				t.Errorf("%s\ndoes not contain %s", out, w)
			}
		}
	}
	lacks := func(t *testing.T, p *meshpb.MeshPacket, keys ...string) {
		t.Helper()
		m := decode(t, p)
		for _, k := range keys {
			if _, ok := m[k]; ok {
				t.Errorf("%q present: %v", k, m)
			}
			if pl, ok := m["payload"].(map[string]any); ok {
				if _, ok := pl[k]; ok {
					t.Errorf("payload %q present: %v", k, pl)
				}
			}
		}
	}

	t.Run("envelope", func(t *testing.T) {
		m := decode(t, packet(meshpb.PortNum_TEXT_MESSAGE_APP, []byte("hi")))
		want := map[string]string{
			"id": "439041101", "timestamp": "1767225600", "to": "4294967295", "from": "195939070",
			"channel": "0", "rssi": "-87", "snr": "5.5", "hops_away": "2", "hop_start": "3",
		}
		for k, v := range want {
			if num(m[k]) != v {
				t.Errorf("%s = %v, want %s", k, m[k], v)
			}
		}
		if m["sender"] != "!a1b2c3d4" || m["type"] != "text" {
			t.Errorf("sender/type = %v/%v", m["sender"], m["type"])
		}
		if pl, _ := m["payload"].(map[string]any); pl["text"] != "hi" {
			t.Errorf("payload = %v", m["payload"])
		}
	})
	t.Run("compact and sorted", func(t *testing.T) {
		contains(t, packet(meshpb.PortNum_TEXT_MESSAGE_APP, []byte("hi")),
			`{"channel":0,"from":195939070,"hop_start":3,"hops_away":2,"id":439041101,"payload":{"text":"hi"},"rssi":-87,"sender":"!a1b2c3d4","snr":5.5,"timestamp":1767225600,"to":4294967295,"type":"text"}`)
	})
	t.Run("zero hop", func(t *testing.T) {
		contains(t, packet(meshpb.PortNum_TEXT_MESSAGE_APP, []byte("hi"), hops(0, 0)), `"hop_start":0,"hops_away":0,`)
		lacks(t, packet(meshpb.PortNum_TEXT_MESSAGE_APP, []byte("hi"), hops(0, 0), noBitfield), "hops_away", "hop_start")
		lacks(t, packet(meshpb.PortNum_TEXT_MESSAGE_APP, []byte("hi"), hops(0, 1)), "hops_away", "hop_start")
		contains(t, packet(meshpb.PortNum_TEXT_MESSAGE_APP, []byte("hi"), hops(2, 2), noBitfield), `"hop_start":2,"hops_away":0,`)
	})
	t.Run("no radio fields", func(t *testing.T) {
		p := packet(meshpb.PortNum_TEXT_MESSAGE_APP, []byte("hi"), noRadio)
		lacks(t, p, "rssi", "snr", "hops_away", "hop_start")
		if m := decode(t, p); num(m["timestamp"]) != "0" {
			t.Errorf("timestamp = %v, want 0", m["timestamp"])
		}
	})
	t.Run("floats as %.15g of the widened float", func(t *testing.T) {
		for _, c := range []struct {
			f    float32
			want string
		}{
			{3.9, "3.90000009536743"}, {12.34, "12.3400001525879"}, {0.5, "0.5"}, {-0.25, "-0.25"},
			{4.106, "4.10599994659424"}, {0.1, "0.100000001490116"}, {1e-5, "9.99999974737875e-06"},
			{3e38, "3.00000000549776e+38"}, {100, "100"}, {0, "0"}, {float32(math.Copysign(0, -1)), "-0"},
			{float32(math.NaN()), "null"}, {float32(math.Inf(1)), "null"},
		} {
			p := packet(meshpb.PortNum_TELEMETRY_APP, pbBytes(t, deviceTelemetry(&meshpb.DeviceMetrics{Voltage: ptr(c.f)})))
			contains(t, p, `"voltage":`+c.want+`}`)
		}
	})
	t.Run("device metrics always", func(t *testing.T) {
		contains(t, packet(meshpb.PortNum_TELEMETRY_APP, pbBytes(t, deviceTelemetry(&meshpb.DeviceMetrics{}))),
			`"payload":{"air_util_tx":0,"channel_utilization":0,"uptime_seconds":0,"voltage":0}`)
		contains(t, packet(meshpb.PortNum_TELEMETRY_APP, pbBytes(t, deviceTelemetry(&meshpb.DeviceMetrics{BatteryLevel: ptr(uint32(0))}))),
			`"payload":{"air_util_tx":0,"battery_level":0,"channel_utilization":0,"uptime_seconds":0,"voltage":0}`)
	})
	t.Run("air quality keys of 2.7.26", func(t *testing.T) {
		p := packet(meshpb.PortNum_TELEMETRY_APP, pbBytes(t, &meshpb.Telemetry{Variant: &meshpb.Telemetry_AirQualityMetrics{
			AirQualityMetrics: &meshpb.AirQualityMetrics{Pm10Environmental: ptr(uint32(1)), Pm25Environmental: ptr(uint32(2)),
				Pm100Environmental: ptr(uint32(3)), FormTemperature: ptr(float32(20))}}}))
		lacks(t, p, "pm10_e", "pm25_e", "pm100_e")
		contains(t, p, `"payload":{"form_temperature":20}`)
	})
	t.Run("remote hardware", func(t *testing.T) {
		contains(t, packet(meshpb.PortNum_REMOTE_HARDWARE_APP, hardwareMessage(3, 1, 0x1_0000_0007)),
			`"payload":{"gpio_value":7}`, `"type":"gpios_changed"`)
		contains(t, packet(meshpb.PortNum_REMOTE_HARDWARE_APP, hardwareMessage(5, 15, 7)),
			`"payload":{"gpio_mask":15,"gpio_value":7}`, `"type":"gpios_read_reply"`)
		for _, typ := range []uint64{0, 1, 2, 4, 6} {
			p := packet(meshpb.PortNum_REMOTE_HARDWARE_APP, hardwareMessage(typ, 15, 7))
			lacks(t, p, "payload")
			contains(t, p, `"type":""`)
		}
		p := packet(meshpb.PortNum_REMOTE_HARDWARE_APP, wire(nil).bytes(3, []byte{7})) // gpio_value in the wrong wire type
		lacks(t, p, "payload")
	})
	t.Run("undecodable keeps its type", func(t *testing.T) {
		for port, typ := range map[meshpb.PortNum]string{
			meshpb.PortNum_TELEMETRY_APP:    "telemetry",
			meshpb.PortNum_POSITION_APP:     "position",
			meshpb.PortNum_NODEINFO_APP:     "nodeinfo",
			meshpb.PortNum_WAYPOINT_APP:     "waypoint",
			meshpb.PortNum_NEIGHBORINFO_APP: "neighborinfo",
			meshpb.PortNum_PAXCOUNTER_APP:   "paxcounter",
			meshpb.PortNum_TRACEROUTE_APP:   "traceroute",
		} {
			p := packet(port, []byte{0x0a}, requestID(1)) // a length-delimited field cut short
			lacks(t, p, "payload")
			contains(t, p, `"type":"`+typ+`"`)
		}
	})
	t.Run("encrypted", func(t *testing.T) {
		p := &meshpb.MeshPacket{From: nodeAlice, To: Broadcast, Id: 1,
			PayloadVariant: &meshpb.MeshPacket_Encrypted{Encrypted: []byte{1, 2, 3}}}
		contains(t, p, `{"channel":0,"from":195939070,"id":1,"sender":"!a1b2c3d4","timestamp":0,"to":4294967295,"type":""}`)
	})
	t.Run("traceroute names", func(t *testing.T) {
		p := packet(meshpb.PortNum_TRACEROUTE_APP, pbBytes(t, &meshpb.RouteDiscovery{Route: []uint32{nodeCarol}}),
			func(p *meshpb.MeshPacket) { p.From, p.To = nodeBob, nodeAlice }, requestID(9))
		out, err := JSONUplink(p, testGateway, nil) // nil longName: everything Unknown
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(out, []byte(`"route":["Unknown","Unknown","Unknown"]`)) ||
			!bytes.Contains(out, []byte(`"snr_towards":[]`)) {
			t.Errorf("got %s", out)
		}
	})
	t.Run("nil packet", func(t *testing.T) {
		if out, err := JSONUplink(nil, testGateway, nil); err == nil {
			t.Errorf("no error, got %s", out)
		}
	})
}

// TestFirmwareJSONText checks the firmware's JSON parser (JSON::Parse,
// JSONValue::Parse) and writer (JSONValue::StringifyImpl) on text payloads:
// what it accepts, and how it writes back what it read.
func TestFirmwareJSONText(t *testing.T) {
	const notJSON = "" // the firmware does not read it as JSON
	tests := []struct{ in, want string }{
		{`{"b":1,"a":2}`, `{"a":2,"b":1}`},
		{" \t\r\n[ 1 , 2 ]\n", `[1,2]`},
		{`[]`, `[]`},
		{`{}`, `{}`},
		{`{ }`, `{}`},
		{`"x/y"`, `"x\/y"`},
		{`TRUE`, `true`},
		{`fAlSe`, `false`},
		{`NULL`, `null`},
		{`truex`, notJSON},
		{`tru`, notJSON},
		{`NaN`, notJSON},
		{`-0`, `-0`},
		{`0`, `0`},
		{`007`, notJSON},
		{`-`, notJSON},
		{`1.`, notJSON},
		{`.5`, notJSON},
		{`+1`, notJSON},
		{`1e`, notJSON},
		{`1e+2`, `100`},
		{`1E-2`, `0.01`},
		{`2.5e-1`, `0.25`},
		{`0.3`, `0.3`},
		{`123456789.123456789`, `123456789.123457`},
		{`1e400`, `null`},  // infinite: written as null
		{`-1e400`, `null`}, // likewise
		{`1e-400`, `0`},
		{`12345678901234567890`, `1.23456789012346e+19`},
		{`{"a":1,"a":2}`, `{"a":2}`},
		{`{xa":1}`, `{"a":1}`}, // the key's opening quote is not checked
		{`{"a":1,}`, notJSON},
		{`[1,]`, notJSON},
		{`[1 2]`, notJSON},
		{`{"a" 1}`, notJSON},
		{`{"a":1} x`, notJSON},
		{`{"a":1`, notJSON},
		{"\"a\tb\"", `"a\tb"`},            // a raw tab is allowed
		{"\"a\nb\"", notJSON},             // other control characters are not
		{`"\u0041\u00e9"`, "\"A\ufffd\""}, // the low byte only: 0xe9 alone is not UTF-8
		{`"\u4e2d"`, `"-"`},               // U+4E2D keeps 0x2d
		{`"\u0000"`, `"\u0000"`},
		{`"\u12"`, notJSON},
		{`"\x"`, notJSON},
		{`"é👋"`, `"é👋"`},
		{"\"\x7f\"", `"\u007f"`},
		{`"unterminated`, notJSON},
		{``, notJSON},
		{`   `, notJSON},
	}
	for _, tc := range tests {
		v, ok := parseFirmwareJSON([]byte(tc.in))
		got := notJSON
		if ok {
			got = string(appendFirmwareJSON(nil, v))
		}
		if got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestDecodeLikeNanopb checks what the firmware's nanopb structs refuse
// (src/mesh/generated/meshtastic/*.pb.h of 2.7.26) and what Go's decoder
// refuses but nanopb takes.
func TestDecodeLikeNanopb(t *testing.T) {
	user := func(fields ...wire) []byte {
		var w wire
		for _, f := range fields {
			w = append(w, f...)
		}
		return w
	}
	str := func(num protowire.Number, n int) wire { return wire(nil).bytes(num, bytes.Repeat([]byte("x"), n)) }
	tests := []struct {
		name string
		m    proto.Message
		b    []byte
		ok   bool
	}{
		{"user id 15", &meshpb.User{}, user(str(1, 15)), true},
		{"user id 16", &meshpb.User{}, user(str(1, 16)), false},
		{"user long_name 39", &meshpb.User{}, user(str(2, 39)), true},
		{"user long_name 40", &meshpb.User{}, user(str(2, 40)), false},
		{"user short_name 4", &meshpb.User{}, user(str(3, 4)), true},
		{"user short_name 5", &meshpb.User{}, user(str(3, 5)), false},
		{"user macaddr 6", &meshpb.User{}, user(str(4, 6)), true},
		{"user macaddr empty", &meshpb.User{}, user(str(4, 0)), true},
		{"user macaddr 5", &meshpb.User{}, user(str(4, 5)), false},
		{"user public_key 32", &meshpb.User{}, user(str(8, 32)), true},
		{"user public_key 33", &meshpb.User{}, user(str(8, 33)), false},
		{"user invalid UTF-8", &meshpb.User{}, wire(nil).bytes(2, []byte{0xff}), true},
		{"user hw_model beyond 32 bits", &meshpb.User{}, wire(nil).varint(5, 1<<32), false},
		{"waypoint name 29", &meshpb.Waypoint{}, str(6, 29), true},
		{"waypoint name 30", &meshpb.Waypoint{}, str(6, 30), false},
		{"waypoint description 100", &meshpb.Waypoint{}, str(7, 100), false},
		{"env soil_moisture 255", &meshpb.EnvironmentMetrics{}, wire(nil).varint(21, 255), true},
		{"env soil_moisture 256", &meshpb.EnvironmentMetrics{}, wire(nil).varint(21, 256), false},
		{"env wind_direction 65536", &meshpb.EnvironmentMetrics{}, wire(nil).varint(13, 65536), false},
		{"telemetry nested overflow", &meshpb.Telemetry{}, wire(nil).bytes(3, wire(nil).varint(7, 65536)), false},
		{"uint32 beyond 32 bits", &meshpb.Paxcount{}, wire(nil).varint(1, 1<<32), false},
		{"int32 from a 64-bit varint", &meshpb.Position{}, wire(nil).varint(3, math.MaxUint64), true},
		{"route 8 packed", &meshpb.RouteDiscovery{}, pbBytes(t, &meshpb.RouteDiscovery{Route: make([]uint32, 8)}), true},
		{"route 9 packed", &meshpb.RouteDiscovery{}, pbBytes(t, &meshpb.RouteDiscovery{Route: make([]uint32, 9)}), false},
		{"route 9 packed and unpacked", &meshpb.RouteDiscovery{},
			append(pbBytes(t, &meshpb.RouteDiscovery{Route: make([]uint32, 8)}), protowire.AppendFixed32(protowire.AppendTag(nil, 1, protowire.Fixed32Type), 1)...), false},
		{"snr -128", &meshpb.RouteDiscovery{}, pbBytes(t, &meshpb.RouteDiscovery{SnrBack: []int32{-128, 127}}), true},
		{"snr -129", &meshpb.RouteDiscovery{}, pbBytes(t, &meshpb.RouteDiscovery{SnrBack: []int32{-129}}), false},
		{"neighbors 10", &meshpb.NeighborInfo{}, pbBytes(t, &meshpb.NeighborInfo{Neighbors: slices.Repeat([]*meshpb.Neighbor{{}}, 10)}), true},
		{"wrong wire type", &meshpb.Paxcount{}, protowire.AppendFixed32(protowire.AppendTag(nil, 1, protowire.Fixed32Type), 1), false},
		{"unknown field", &meshpb.Paxcount{}, wire(nil).varint(99, 1).bytes(98, []byte("x")), true},
		{"unknown group", &meshpb.Paxcount{}, protowire.AppendTag(protowire.AppendTag(nil, 99, protowire.StartGroupType), 99, protowire.EndGroupType), false},
		{"truncated", &meshpb.Paxcount{}, []byte{0x08}, false},
	}
	for _, tc := range tests {
		if got := decodeLikeNanopb(tc.b, tc.m); got != tc.ok {
			t.Errorf("%s: decodes = %v, want %v", tc.name, got, tc.ok)
		}
	}
	var u meshpb.User
	if !decodeLikeNanopb(wire(nil).bytes(2, []byte("a\xff")).bytes(2, []byte("Bob\xf0")).varint(5, 43), &u) ||
		u.GetLongName() != "Bob\xf0" || u.GetHwModel() != 43 {
		t.Errorf("lenient decode: %q %v", u.GetLongName(), u.GetHwModel())
	}
}

// gw is the gateway used by the downlink tests: 2712847316 = !a1b2c3d4.
const gw = testGateway

func TestParseDownlinkAccepted(t *testing.T) {
	text := func(s string) *meshpb.Data {
		return &meshpb.Data{Portnum: meshpb.PortNum_TEXT_MESSAGE_APP, Payload: []byte(s)}
	}
	position := func(t *testing.T, p *meshpb.Position) *meshpb.Data {
		return &meshpb.Data{Portnum: meshpb.PortNum_POSITION_APP, Payload: pbBytes(t, p)}
	}
	tests := []struct {
		name string
		in   string
		want Downlink
	}{
		{"sendtext broadcast", `{"from":2712847316,"type":"sendtext","payload":"hello mesh"}`,
			Downlink{Type: "sendtext", To: Broadcast, Data: text("hello mesh")}},
		{"sendtext with to channel hopLimit", `{"from":2712847316,"to":195939070,"channel":2,"hopLimit":7,"type":"sendtext","payload":"hi Alice"}`,
			Downlink{Type: "sendtext", To: nodeAlice, Channel: 2, HopLimit: 7, Data: text("hi Alice")}},
		{"missing from", `{"type":"sendtext","payload":"no from"}`,
			Downlink{Type: "sendtext", To: Broadcast, Data: text("no from")}},
		{"explicit broadcast and zeroes", `{"type":"sendtext","to":4294967295,"channel":0,"hopLimit":0,"payload":"x"}`,
			Downlink{Type: "sendtext", To: Broadcast, Data: text("x")}},
		{"other sender", `{"sender":"!0badcafe","type":"sendtext","payload":"relay"}`,
			Downlink{Type: "sendtext", To: Broadcast, Data: text("relay")}},
		{"unknown keys ignored", `{"type":"sendtext","payload":"x","id":1,"timestamp":2,"extra":{"a":[1,2]}}`,
			Downlink{Type: "sendtext", To: Broadcast, Data: text("x")}},
		{"surrounding whitespace", " \n\t{\"type\":\"sendtext\",\"payload\":\"x\"}\r\n ",
			Downlink{Type: "sendtext", To: Broadcast, Data: text("x")}},
		{"escapes and NUL", `{"type":"sendtext","payload":"a\u0000b \"q\" \u00e9 \ud83d\udc4b"}`,
			Downlink{Type: "sendtext", To: Broadcast, Data: text("a\x00b \"q\" é 👋")}},
		{"200 bytes of text", `{"type":"sendtext","payload":"` + strings.Repeat("é", 100) + `"}`,
			Downlink{Type: "sendtext", To: Broadcast, Data: text(strings.Repeat("é", 100))}},
		{"sendposition", `{"from":2712847316,"type":"sendposition","payload":{"latitude_i":525200000,"longitude_i":134050000,"altitude":34,"time":1767225600}}`,
			Downlink{Type: "sendposition", To: Broadcast, Data: position(t, &meshpb.Position{
				LatitudeI: ptr(int32(525200000)), LongitudeI: ptr(int32(134050000)), Altitude: ptr(int32(34)), Time: 1767225600})}},
		{"sendposition minimal southwest", `{"type":"sendposition","channel":1,"payload":{"latitude_i":-339000000,"longitude_i":-1800000000}}`,
			Downlink{Type: "sendposition", To: Broadcast, Channel: 1, Data: position(t, &meshpb.Position{
				LatitudeI: ptr(int32(-339000000)), LongitudeI: ptr(int32(-1800000000))})}},
		{"sendposition negative altitude", `{"type":"sendposition","payload":{"latitude_i":0,"longitude_i":0,"altitude":-28}}`,
			Downlink{Type: "sendposition", To: Broadcast, Data: position(t, &meshpb.Position{
				LatitudeI: ptr(int32(0)), LongitudeI: ptr(int32(0)), Altitude: ptr(int32(-28))})}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseDownlink([]byte(tc.in), gw)
			if err != nil {
				t.Fatal(err)
			}
			if got.Type != tc.want.Type || got.To != tc.want.To || got.Channel != tc.want.Channel || got.HopLimit != tc.want.HopLimit {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			if !proto.Equal(got.Data, tc.want.Data) {
				t.Errorf("Data = %v, want %v", got.Data, tc.want.Data)
			}
		})
	}
}

func TestParseDownlinkRejected(t *testing.T) {
	long := strings.Repeat("x", 5000)
	tests := []struct {
		name string
		in   string
		want []string // substrings of the error
	}{
		{"empty", ``, []string{"empty", "expected a JSON object"}},
		{"malformed", `{"type":"sendtext",`, []string{"malformed JSON"}},
		{"not json", `hello`, []string{"malformed JSON", "invalid character"}},
		{"array", `[{"type":"sendtext","payload":"x"}]`, []string{"message is an array", "expected a JSON object"}},
		{"string", `"sendtext"`, []string{"message is a string", "expected a JSON object"}},
		{"null", `null`, []string{"message is null"}},
		{"missing type", `{"payload":"x"}`, []string{`missing "type"`, `"sendtext" or "sendposition"`}},
		{"type not string", `{"type":1,"payload":"x"}`, []string{`"type" is a number`}},
		{"unknown type", `{"type":"sendwaypoint","payload":"x"}`, []string{`unknown "type" "sendwaypoint"`, `expected "sendtext" or "sendposition"`}},
		{"type wrong case", `{"type":"SendText","payload":"x"}`, []string{`unknown "type" "SendText"`}},
		{"from mismatch", `{"from":195939070,"type":"sendtext","payload":"x"}`, []string{`"from" is 195939070 (!0badcafe)`, "2712847316 (!a1b2c3d4)"}},
		{"from as id string", `{"from":"!a1b2c3d4","type":"sendtext","payload":"x"}`, []string{`"from" is a string`, "whole number"}},
		{"sender is gateway", `{"sender":"!a1b2c3d4","type":"sendtext","payload":"x"}`, []string{`"sender"`, "!a1b2c3d4", "loop"}},
		{"sender is gateway uppercase", `{"sender":"!A1B2C3D4","type":"sendtext","payload":"x"}`, []string{"loop"}},
		{"sender not string", `{"sender":2712847316,"type":"sendtext","payload":"x"}`, []string{`"sender" is a number`}},
		{"text too long", `{"type":"sendtext","payload":"` + strings.Repeat("a", 201) + `"}`, []string{"201 bytes", "at most 200"}},
		{"text too long multibyte", `{"type":"sendtext","payload":"` + strings.Repeat("é", 100) + `a"}`, []string{"201 bytes"}},
		{"text empty", `{"type":"sendtext","payload":""}`, []string{"empty"}},
		{"text not string", `{"type":"sendtext","payload":{"text":"x"}}`, []string{`"payload" is an object`, "JSON string"}},
		{"text missing", `{"type":"sendtext"}`, []string{`missing "payload"`}},
		{"invalid utf8", "{\"type\":\"sendtext\",\"payload\":\"a\xff\xfeb\"}", []string{"UTF-8"}},
		{"channel 8", `{"type":"sendtext","channel":8,"payload":"x"}`, []string{`"channel" is 8`, "from 0 to 7"}},
		{"hopLimit 8", `{"type":"sendtext","hopLimit":8,"payload":"x"}`, []string{`"hopLimit" is 8`, "from 0 to 7"}},
		{"to fractional", `{"type":"sendtext","to":1.5,"payload":"x"}`, []string{`"to" is 1.5`, "whole number"}},
		{"to one point zero", `{"type":"sendtext","to":1.0,"payload":"x"}`, []string{`"to" is 1.0`}},
		{"to exponent", `{"type":"sendtext","to":1e3,"payload":"x"}`, []string{`"to" is 1e3`}},
		{"to negative", `{"type":"sendtext","to":-1,"payload":"x"}`, []string{`"to" is -1`, "from 0 to 4294967295"}},
		{"to too big", `{"type":"sendtext","to":4294967296,"payload":"x"}`, []string{`"to" is 4294967296`}},
		{"to zero", `{"type":"sendtext","to":0,"payload":"x"}`, []string{`"to" is 0`, "broadcast"}},
		{"to string", `{"type":"sendtext","to":"!0badcafe","payload":"x"}`, []string{`"to" is a string`}},
		{"channel null", `{"type":"sendtext","channel":null,"payload":"x"}`, []string{`"channel" is null`}},
		{"channel negative", `{"type":"sendtext","channel":-0,"payload":"x"}`, []string{`"channel" is -0`}},
		{"hopLimit fractional", `{"type":"sendtext","hopLimit":2.5,"payload":"x"}`, []string{`"hopLimit" is 2.5`}},
		{"trailing garbage", `{"type":"sendtext","payload":"x"} trailing`, []string{"after the JSON object"}},
		{"two objects", `{"type":"sendtext","payload":"x"}{"type":"sendtext","payload":"y"}`, []string{"after the JSON object"}},
		{"trailing brace", `{"type":"sendtext","payload":"x"}}`, []string{"after the JSON object"}},
		{"position not object", `{"type":"sendposition","payload":"52.5,13.4"}`, []string{`"payload" is a string`, "latitude_i"}},
		{"position missing", `{"type":"sendposition"}`, []string{`missing "payload"`, "latitude_i"}},
		{"position no latitude", `{"type":"sendposition","payload":{"longitude_i":1}}`, []string{`no "latitude_i"`}},
		{"position no longitude", `{"type":"sendposition","payload":{"latitude_i":1}}`, []string{`no "longitude_i"`}},
		{"position latitude range", `{"type":"sendposition","payload":{"latitude_i":900000001,"longitude_i":1}}`, []string{`"payload.latitude_i" is 900000001`, "-900000000 to 900000000"}},
		{"position degrees", `{"type":"sendposition","payload":{"latitude_i":52.52,"longitude_i":13.4}}`, []string{`"payload.latitude_i" is 52.52`}},
		{"position altitude range", `{"type":"sendposition","payload":{"latitude_i":1,"longitude_i":1,"altitude":2147483648}}`, []string{`"payload.altitude" is 2147483648`}},
		{"position time negative", `{"type":"sendposition","payload":{"latitude_i":1,"longitude_i":1,"time":-5}}`, []string{`"payload.time" is -5`}},
		{"long unknown type", `{"type":"` + long + `","payload":"x"}`, []string{`unknown "type" "xxxx`, "…"}},
		{"long number", `{"type":"sendtext","to":` + strings.Repeat("9", 500) + `,"payload":"x"}`, []string{`"to" is 9999`, "…"}},
		{"long text", `{"type":"sendtext","payload":"` + long + `"}`, []string{"5000 bytes"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseDownlink([]byte(tc.in), gw)
			if err == nil {
				t.Fatalf("accepted: %+v", got)
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
			if len(msg) > 300 || strings.Contains(msg, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx") {
				t.Errorf("error too long for a log line (%d bytes): %q", len(msg), msg)
			}
			if got.Data != nil {
				t.Errorf("Data set on error: %v", got.Data)
			}
		})
	}
}

func FuzzParseDownlink(f *testing.F) {
	f.Add([]byte(`{"type":"sendtext","payload":"hello"}`))
	f.Add([]byte(`{"from":2712847316,"to":195939070,"channel":7,"hopLimit":7,"type":"sendtext","payload":"\u00e9\ud83d\udc4b"}`))
	f.Add([]byte(`{"type":"sendposition","payload":{"latitude_i":-900000000,"longitude_i":1800000000,"altitude":-1,"time":4294967295}}`))
	f.Add([]byte(`{"sender":"!a1b2c3d4","type":"sendtext","payload":"loop"}`))
	f.Add([]byte(`{"type":"sendtext","to":1.5e1,"payload":"x"} {}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		dl, err := ParseDownlink(in, gw)
		if err != nil {
			if dl.Data != nil {
				t.Fatalf("Data set on error %v", err)
			}
			if len(err.Error()) > 400 {
				t.Fatalf("error of %d bytes: %q", len(err.Error()), err)
			}
			return
		}
		if dl.Data == nil {
			t.Fatal("nil Data without error")
		}
		if dl.Channel > 7 || dl.HopLimit > 7 || dl.To == 0 {
			t.Fatalf("out of range: %+v", dl)
		}
		switch dl.Type {
		case DownlinkSendText:
			pl := dl.Data.GetPayload()
			if dl.Data.GetPortnum() != meshpb.PortNum_TEXT_MESSAGE_APP || len(pl) == 0 || len(pl) > topics.MaxTextBytes || !utf8.Valid(pl) {
				t.Fatalf("bad text Data %v", dl.Data)
			}
			b, err := proto.Marshal(dl.Data)
			if err != nil {
				t.Fatal(err)
			}
			var back meshpb.Data
			if err := proto.Unmarshal(b, &back); err != nil || !proto.Equal(&back, dl.Data) {
				t.Fatalf("Data does not round-trip: %v", err)
			}
		case DownlinkSendPosition:
			var pos meshpb.Position
			if dl.Data.GetPortnum() != meshpb.PortNum_POSITION_APP {
				t.Fatalf("bad position Data %v", dl.Data)
			}
			if err := proto.Unmarshal(dl.Data.GetPayload(), &pos); err != nil || pos.LatitudeI == nil || pos.LongitudeI == nil {
				t.Fatalf("bad position payload: %v %v", err, &pos)
			}
		default:
			t.Fatalf("type %q accepted", dl.Type)
		}
	})
}

var uplinkPorts = []meshpb.PortNum{
	meshpb.PortNum_TEXT_MESSAGE_APP,
	meshpb.PortNum_TELEMETRY_APP,
	meshpb.PortNum_NODEINFO_APP,
	meshpb.PortNum_POSITION_APP,
	meshpb.PortNum_WAYPOINT_APP,
	meshpb.PortNum_NEIGHBORINFO_APP,
	meshpb.PortNum_TRACEROUTE_APP,
	meshpb.PortNum_DETECTION_SENSOR_APP,
	meshpb.PortNum_PAXCOUNTER_APP,
	meshpb.PortNum_REMOTE_HARDWARE_APP,
	meshpb.PortNum_ROUTING_APP, // not rendered
	meshpb.PortNum_UNKNOWN_APP, // with sel beyond the list: an encrypted packet
}

var uplinkTypes = map[string]bool{
	"": true, "text": true, "telemetry": true, "nodeinfo": true, "position": true, "waypoint": true,
	"neighborinfo": true, "traceroute": true, "detection": true, "paxcounter": true,
	"gpios_changed": true, "gpios_read_reply": true,
}

// FuzzJSONUplink: whatever the packet, JSONUplink does not panic and writes
// one valid UTF-8 JSON object with the envelope's keys, a known type, and
// hops_away exactly when hop_start.
func FuzzJSONUplink(f *testing.F) {
	f.Add(uint8(0), []byte(`{"a":[1,2,{"b":null}]}`), uint32(0), float32(5.5), int32(-90), uint8(3), uint8(1), true)
	f.Add(uint8(0), []byte("[TRUE,1e999,\"\\u00e9\t\",{x\":-0}]"), uint32(0), float32(0), int32(0), uint8(0), uint8(0), true)
	f.Add(uint8(1), pbBytes(f, &meshpb.Telemetry{Variant: &meshpb.Telemetry_EnvironmentMetrics{
		EnvironmentMetrics: &meshpb.EnvironmentMetrics{Temperature: ptr(float32(math.NaN()))}}}), uint32(0), float32(math.Inf(-1)), int32(0), uint8(0), uint8(0), false)
	f.Add(uint8(1), pbBytes(f, deviceTelemetry(&meshpb.DeviceMetrics{})), uint32(0), float32(0), int32(0), uint8(0), uint8(0), true)
	f.Add(uint8(2), []byte(wire(nil).bytes(2, []byte("\xf0\x9f"))), uint32(0), float32(1), int32(1), uint8(7), uint8(0), true)
	f.Add(uint8(3), pbBytes(f, &meshpb.Position{LatitudeI: ptr(int32(-1))}), uint32(0), float32(0), int32(1), uint8(7), uint8(7), true)
	f.Add(uint8(5), pbBytes(f, &meshpb.NeighborInfo{Neighbors: []*meshpb.Neighbor{{Snr: float32(math.NaN())}, {Snr: 1e30}}}), uint32(0), float32(-1), int32(0), uint8(1), uint8(2), true)
	f.Add(uint8(6), pbBytes(f, &meshpb.RouteDiscovery{Route: []uint32{nodeAlice, 0}, SnrBack: []int32{math.MinInt32}}), uint32(7), float32(0), int32(0), uint8(0), uint8(0), true)
	f.Add(uint8(7), []byte("\xff\x00<script>"), uint32(0), float32(0), int32(0), uint8(0), uint8(0), true)
	f.Add(uint8(9), hardwareMessage(5, math.MaxUint64, 1<<40), uint32(0), float32(0), int32(0), uint8(0), uint8(0), true)
	f.Add(uint8(11), []byte{1, 2, 3}, uint32(0), float32(0), int32(0), uint8(200), uint8(0), false)
	f.Fuzz(func(t *testing.T, sel uint8, payload []byte, requestID uint32, snr float32, rssi int32, hopStart, hopLimit uint8, bitfield bool) {
		p := &meshpb.MeshPacket{
			From: nodeBob, To: nodeAlice, Id: 1, RxSnr: snr, RxRssi: &rssi,
			HopStart: uint32(hopStart), HopLimit: uint32(hopLimit),
		}
		if int(sel) < len(uplinkPorts)-1 {
			d := &meshpb.Data{Portnum: uplinkPorts[sel], Payload: payload, RequestId: requestID}
			if bitfield {
				d.Bitfield = ptr(uint32(1))
			}
			p.PayloadVariant = &meshpb.MeshPacket_Decoded{Decoded: d}
		} else {
			p.PayloadVariant = &meshpb.MeshPacket_Encrypted{Encrypted: payload}
		}
		out, err := JSONUplink(p, testGateway, testLongName)
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(out) || !utf8.Valid(out) {
			t.Fatalf("invalid JSON output: %q", out)
		}
		var m map[string]any
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"id", "timestamp", "to", "from", "channel", "type", "sender"} {
			if _, ok := m[k]; !ok {
				t.Fatalf("no %q in %s", k, out)
			}
		}
		if m["sender"] != NodeID(testGateway) {
			t.Fatalf("sender = %v", m["sender"])
		}
		typ, _ := m["type"].(string)
		if !uplinkTypes[typ] {
			t.Fatalf("type %q", typ)
		}
		if _, ok := m["payload"]; ok && typ == "" {
			t.Fatalf("payload without a type: %s", out)
		}
		_, a := m["hops_away"]
		_, s := m["hop_start"]
		if a != s {
			t.Fatalf("hops_away %v, hop_start %v: %s", a, s, out)
		}
	})
}

// FuzzFirmwareJSONText: the firmware's JSON parser never panics, what it
// reads is written back as valid UTF-8 JSON, and it reads every standard
// JSON text a text payload can hold.
func FuzzFirmwareJSONText(f *testing.F) {
	for _, s := range []string{`{"a":[1,2.5e-3,{"b":null}]}`, `[TRUE,nUlL,"\u00e9"]`, "\"a\tb\"", `{x":1,"x":2}`, ` -0.000 `, `1e999`, `"\ud83d\udc4b"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		v, ok := parseFirmwareJSON(cString(in))
		if ok {
			out := appendFirmwareJSON(nil, v)
			if !json.Valid(out) || !utf8.Valid(out) {
				t.Fatalf("%q gives invalid JSON %q", in, out)
			}
		} else if len(in) <= 233 && utf8.Valid(in) && json.Valid(in) && !bytes.Contains(in, []byte{0}) {
			t.Fatalf("standard JSON %q not read", in)
		}
	})
}
