package mesh

import (
	"bytes"
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

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

// packet builds a broadcast packet from Alice as heard over the radio.
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
			Portnum: port,
			Payload: payload,
		}},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func noRadio(p *meshpb.MeshPacket) {
	p.RxTime, p.RxSnr, p.RxRssi, p.HopStart, p.HopLimit = nil, 0, nil, 0, 0
}

func TestJSONUplinkGolden(t *testing.T) {
	tests := []struct {
		name string
		p    *meshpb.MeshPacket
	}{
		{"text", packet(meshpb.PortNum_TEXT_MESSAGE_APP, []byte("Hello mesh <&> ünïcödé 👋"))},
		{"text_is_json", packet(meshpb.PortNum_TEXT_MESSAGE_APP, []byte(`{"temp": 21.5, "ok": true, "tags": ["a", "b"]}`))},
		{"text_dm_no_radio_fields", packet(meshpb.PortNum_TEXT_MESSAGE_APP, []byte("direct"), noRadio,
			func(p *meshpb.MeshPacket) { p.To, p.Channel = testGateway, 2 })},
		{"text_bad_hops", packet(meshpb.PortNum_TEXT_MESSAGE_APP, []byte("hop_limit above hop_start"),
			func(p *meshpb.MeshPacket) { p.HopStart, p.HopLimit, p.RxSnr = 3, 5, -12.25 })},
		{"position", packet(meshpb.PortNum_POSITION_APP, pbBytes(t, &meshpb.Position{
			LatitudeI:     ptr(int32(525200000)),
			LongitudeI:    ptr(int32(-134050000)),
			Altitude:      ptr(int32(34)),
			Time:          1767225590,
			GroundSpeed:   ptr(uint32(0)), // present but zero: left out
			GroundTrack:   ptr(uint32(9000)),
			SatsInView:    9,
			PDOP:          180,
			HDOP:          95,
			PrecisionBits: 32,
		}))},
		{"telemetry_device", packet(meshpb.PortNum_TELEMETRY_APP, pbBytes(t, &meshpb.Telemetry{
			Time: 1767225600,
			Variant: &meshpb.Telemetry_DeviceMetrics{DeviceMetrics: &meshpb.DeviceMetrics{
				BatteryLevel:       ptr(uint32(101)),
				Voltage:            ptr(float32(3.9)),
				ChannelUtilization: ptr(float32(12.34)),
				AirUtilTx:          ptr(float32(0.5)),
				UptimeSeconds:      ptr(uint32(86400)),
			}},
		}))},
		{"telemetry_environment", packet(meshpb.PortNum_TELEMETRY_APP, pbBytes(t, &meshpb.Telemetry{
			Variant: &meshpb.Telemetry_EnvironmentMetrics{EnvironmentMetrics: &meshpb.EnvironmentMetrics{
				Temperature:        ptr(float32(21.3)),
				RelativeHumidity:   ptr(float32(45.5)),
				BarometricPressure: ptr(float32(1013.25)),
				Iaq:                ptr(uint32(50)),
				Lux:                ptr(float32(0)), // present zero is kept
				WindDirection:      ptr(uint32(270)),
				SoilMoisture:       ptr(uint32(33)),
			}},
		}))},
		{"telemetry_air_quality", packet(meshpb.PortNum_TELEMETRY_APP, pbBytes(t, &meshpb.Telemetry{
			Variant: &meshpb.Telemetry_AirQualityMetrics{AirQualityMetrics: &meshpb.AirQualityMetrics{
				Pm25Standard:   ptr(uint32(12)),
				Co2:            ptr(uint32(640)),
				Co2Temperature: ptr(float32(22.1)),
			}},
		}))},
		{"telemetry_power", packet(meshpb.PortNum_TELEMETRY_APP, pbBytes(t, &meshpb.Telemetry{
			Variant: &meshpb.Telemetry_PowerMetrics{PowerMetrics: &meshpb.PowerMetrics{
				Ch1Voltage: ptr(float32(12.6)),
				Ch1Current: ptr(float32(-0.25)),
			}},
		}))},
		{"telemetry_local_stats", packet(meshpb.PortNum_TELEMETRY_APP, pbBytes(t, &meshpb.Telemetry{
			Variant: &meshpb.Telemetry_LocalStats{LocalStats: &meshpb.LocalStats{UptimeSeconds: 5}},
		}))},
		{"nodeinfo", packet(meshpb.PortNum_NODEINFO_APP, pbBytes(t, &meshpb.User{
			Id:        NodeID(nodeAlice),
			LongName:  "Alice Base",
			ShortName: "ALB",
			HwModel:   meshpb.HardwareModel(43),
			Role:      meshpb.Config_DeviceConfig_Role(2),
			PublicKey: bytes.Repeat([]byte{7}, 32),
		}))},
		{"neighborinfo", packet(meshpb.PortNum_NEIGHBORINFO_APP, pbBytes(t, &meshpb.NeighborInfo{
			NodeId:                    nodeAlice,
			LastSentById:              nodeAlice,
			NodeBroadcastIntervalSecs: 14400,
			Neighbors: []*meshpb.Neighbor{
				{NodeId: nodeBob, Snr: 6.75},
				{NodeId: nodeCarol, Snr: -3.5},
			},
		}))},
		{"neighborinfo_empty", packet(meshpb.PortNum_NEIGHBORINFO_APP, nil)},
		{"traceroute_response", packet(meshpb.PortNum_TRACEROUTE_APP, pbBytes(t, &meshpb.RouteDiscovery{
			// Alice traced Carol (name unknown) through Bob; Carol answers.
			Route:      []uint32{nodeBob},
			SnrTowards: []int32{24, -10},
			RouteBack:  []uint32{nodeBob},
			SnrBack:    []int32{13, 0},
		}), func(p *meshpb.MeshPacket) {
			p.From, p.To = nodeCarol, nodeAlice
			p.GetDecoded().RequestId = 0x01020304
		})},
		{"traceroute_request", packet(meshpb.PortNum_TRACEROUTE_APP, pbBytes(t, &meshpb.RouteDiscovery{}),
			func(p *meshpb.MeshPacket) { p.To = nodeBob })},
		{"waypoint", packet(meshpb.PortNum_WAYPOINT_APP, pbBytes(t, &meshpb.Waypoint{
			Id:          77,
			LatitudeI:   ptr(int32(525000000)),
			LongitudeI:  ptr(int32(134000000)),
			Expire:      1767300000,
			Name:        "Camp",
			Description: "Meeting point",
		}))},
		{"detection", packet(meshpb.PortNum_DETECTION_SENSOR_APP, []byte("Motion detected"))},
		{"paxcounter", packet(meshpb.PortNum_PAXCOUNTER_APP, pbBytes(t, &meshpb.Paxcount{Wifi: 12, Ble: 30, Uptime: 3600}))},
		{"unsupported_port", packet(meshpb.PortNum_ROUTING_APP, []byte{0x18, 0x00})},
	}
	seen := map[string]bool{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if seen[tc.name] {
				t.Fatalf("duplicate case name %q", tc.name)
			}
			seen[tc.name] = true
			out, err := JSONUplink(tc.p, testGateway, testLongName)
			if err != nil {
				t.Fatal(err)
			}
			if !json.Valid(out) {
				t.Fatalf("invalid JSON: %s", out)
			}
			again, _ := JSONUplink(tc.p, testGateway, testLongName)
			if !bytes.Equal(out, again) {
				t.Fatalf("output not deterministic:\n%s\n%s", out, again)
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, out, "", "  "); err != nil {
				t.Fatal(err)
			}
			pretty.WriteByte('\n')
			path := filepath.Join("testdata", "json", tc.name+".json")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, pretty.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run TestJSONUplinkGolden -update to create it)", err)
			}
			if !bytes.Equal(pretty.Bytes(), want) {
				t.Errorf("%s differs from golden\ngot:\n%s\nwant:\n%s", path, pretty.Bytes(), want)
			}
		})
	}
}

// TestJSONUplinkSchema checks the hand-verified parts of the schema without
// relying on the golden files.
func TestJSONUplinkSchema(t *testing.T) {
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
			t.Fatal(err)
		}
		return m
	}
	num := func(v any) string { n, _ := v.(json.Number); return string(n) }

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
	t.Run("optional envelope keys", func(t *testing.T) {
		m := decode(t, packet(meshpb.PortNum_TEXT_MESSAGE_APP, []byte("hi"), noRadio))
		for _, k := range []string{"rssi", "snr", "hops_away", "hop_start"} {
			if _, ok := m[k]; ok {
				t.Errorf("%s present without radio data", k)
			}
		}
		if num(m["timestamp"]) != "0" {
			t.Errorf("timestamp = %v, want 0", m["timestamp"])
		}
	})
	t.Run("float32 digits", func(t *testing.T) {
		p := packet(meshpb.PortNum_TELEMETRY_APP, pbBytes(t, &meshpb.Telemetry{
			Variant: &meshpb.Telemetry_DeviceMetrics{DeviceMetrics: &meshpb.DeviceMetrics{Voltage: ptr(float32(3.9))}},
		}))
		out, err := JSONUplink(p, testGateway, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(out, []byte(`"voltage":3.9`)) || bytes.Contains(out, []byte("battery_level")) {
			t.Errorf("got %s", out)
		}
	})
	t.Run("non-finite floats left out", func(t *testing.T) {
		p := packet(meshpb.PortNum_TELEMETRY_APP, pbBytes(t, &meshpb.Telemetry{
			Variant: &meshpb.Telemetry_DeviceMetrics{DeviceMetrics: &meshpb.DeviceMetrics{
				Voltage: ptr(float32(math.NaN())), AirUtilTx: ptr(float32(math.Inf(1))), UptimeSeconds: ptr(uint32(1)),
			}},
		}), func(p *meshpb.MeshPacket) { p.RxSnr = float32(math.NaN()) })
		m := decode(t, p)
		pl := m["payload"].(map[string]any)
		if _, ok := m["snr"]; ok || len(pl) != 1 {
			t.Errorf("got %v", m)
		}
	})
	t.Run("traceroute names", func(t *testing.T) {
		p := packet(meshpb.PortNum_TRACEROUTE_APP, pbBytes(t, &meshpb.RouteDiscovery{Route: []uint32{nodeCarol}}),
			func(p *meshpb.MeshPacket) { p.From, p.To = nodeBob, nodeAlice; p.GetDecoded().RequestId = 9 })
		out, err := JSONUplink(p, testGateway, nil) // nil longName: everything Unknown
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(out, []byte(`"route":["Unknown","Unknown","Unknown"]`)) ||
			!bytes.Contains(out, []byte(`"snr_towards":[]`)) {
			t.Errorf("got %s", out)
		}
	})
	t.Run("text that is a JSON scalar", func(t *testing.T) {
		m := decode(t, packet(meshpb.PortNum_TEXT_MESSAGE_APP, []byte("42")))
		if num(m["payload"]) != "42" {
			t.Errorf("payload = %#v", m["payload"])
		}
	})
	t.Run("invalid UTF-8 text", func(t *testing.T) {
		out, err := JSONUplink(packet(meshpb.PortNum_TEXT_MESSAGE_APP, []byte("\"a\xffb\"")), testGateway, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !utf8.Valid(out) || !json.Valid(out) {
			t.Errorf("got %q", out)
		}
	})
}

func TestJSONUplinkErrors(t *testing.T) {
	encrypted := &meshpb.MeshPacket{From: nodeAlice, To: Broadcast, Id: 1,
		PayloadVariant: &meshpb.MeshPacket_Encrypted{Encrypted: []byte{1, 2, 3}}}
	badUser := pbBytes(t, &meshpb.User{LongName: "ok"})
	badUser[len(badUser)-1] = 0xff // long_name no longer valid UTF-8
	tests := []struct {
		name string
		p    *meshpb.MeshPacket
		want string
	}{
		{"nil packet", nil, "not decoded"},
		{"encrypted", encrypted, "not decoded"},
		{"telemetry garbage", packet(meshpb.PortNum_TELEMETRY_APP, []byte{0xff, 0xff, 0xff}), "telemetry payload (3 bytes) does not decode"},
		{"position truncated", packet(meshpb.PortNum_POSITION_APP, []byte{0x0d, 0x01}), "position payload"},
		{"nodeinfo bad utf8", packet(meshpb.PortNum_NODEINFO_APP, badUser), "nodeinfo payload"},
		{"traceroute garbage", packet(meshpb.PortNum_TRACEROUTE_APP, []byte{0x0a}, func(p *meshpb.MeshPacket) {
			p.GetDecoded().RequestId = 5
		}), "traceroute payload"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := JSONUplink(tc.p, testGateway, testLongName)
			if err == nil {
				t.Fatalf("no error, got %s", out)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
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
	meshpb.PortNum_ROUTING_APP, // unsupported
}

func FuzzJSONUplink(f *testing.F) {
	f.Add(uint8(0), []byte(`{"a":[1,2,{"b":null}]}`), uint32(0), float32(5.5), int32(-90), uint8(3), uint8(1))
	f.Add(uint8(1), pbBytes(f, &meshpb.Telemetry{Variant: &meshpb.Telemetry_EnvironmentMetrics{
		EnvironmentMetrics: &meshpb.EnvironmentMetrics{Temperature: ptr(float32(math.NaN()))}}}), uint32(0), float32(math.Inf(-1)), int32(0), uint8(0), uint8(0))
	f.Add(uint8(3), pbBytes(f, &meshpb.Position{LatitudeI: ptr(int32(-1))}), uint32(0), float32(0), int32(1), uint8(7), uint8(7))
	f.Add(uint8(5), pbBytes(f, &meshpb.NeighborInfo{Neighbors: []*meshpb.Neighbor{{Snr: float32(math.NaN())}, {Snr: 1e30}}}), uint32(0), float32(-1), int32(0), uint8(1), uint8(2))
	f.Add(uint8(6), pbBytes(f, &meshpb.RouteDiscovery{Route: []uint32{nodeAlice, 0}, SnrBack: []int32{math.MinInt32}}), uint32(7), float32(0), int32(0), uint8(0), uint8(0))
	f.Add(uint8(7), []byte("\xff\x00<script>"), uint32(0), float32(0), int32(0), uint8(0), uint8(0))
	f.Fuzz(func(t *testing.T, sel uint8, payload []byte, requestID uint32, snr float32, rssi int32, hopStart, hopLimit uint8) {
		p := &meshpb.MeshPacket{
			From: nodeBob, To: nodeAlice, Id: 1, RxSnr: snr, RxRssi: &rssi,
			HopStart: uint32(hopStart), HopLimit: uint32(hopLimit),
			PayloadVariant: &meshpb.MeshPacket_Decoded{Decoded: &meshpb.Data{
				Portnum:   uplinkPorts[int(sel)%len(uplinkPorts)],
				Payload:   payload,
				RequestId: requestID,
			}},
		}
		out, err := JSONUplink(p, testGateway, testLongName)
		if err != nil {
			return
		}
		if !json.Valid(out) || !utf8.Valid(out) {
			t.Fatalf("invalid JSON output: %q", out)
		}
		var m map[string]any
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatal(err)
		}
		if m["sender"] != NodeID(testGateway) {
			t.Fatalf("sender = %v", m["sender"])
		}
		if _, ok := m["payload"]; ok == (m["type"] == "") {
			t.Fatalf("type %q with payload present = %v", m["type"], ok)
		}
	})
}
