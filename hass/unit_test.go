package hass

import (
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// Unit tests drive the loop's state directly, one message at a time, on a
// bus that keeps what is retained.

type published struct {
	topic   string
	payload []byte
}

type fakeBus struct {
	retained  map[string][]byte
	log       []published
	onPublish func(topic string, payload []byte)
}

func (b *fakeBus) Publish(topic string, payload []byte, retain bool) error {
	if b.onPublish != nil {
		b.onPublish(topic, payload)
	}
	b.log = append(b.log, published{topic, payload})
	if retain {
		if len(payload) == 0 {
			delete(b.retained, topic)
		} else {
			b.retained[topic] = payload
		}
	}
	return nil
}

func (b *fakeBus) Subscribe(string, func(string, []byte)) (func(), error) { return func() {}, nil }

// configs lists the retained discovery topics under prefix.
func (b *fakeBus) configs(prefix string) []string {
	var out []string
	for t := range b.retained {
		if strings.HasPrefix(t, prefix+"/") {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	return out
}

type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

func testState(t *testing.T, tune func(*Config)) (*state, *fakeBus, *clock) {
	t.Helper()
	clk := &clock{time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)}
	cfg := Config{StateDir: t.TempDir(), Now: clk.Now}
	if tune != nil {
		tune(&cfg)
	}
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	bus := &fakeBus{retained: map[string][]byte{}}
	s := newState(cfg, bus, slog.New(slog.NewTextHandler(io.Discard, nil)), func() int { return 0 })
	return s, bus, clk
}

const (
	gwID  = "!5eed0001"
	gwNum = 0x5eed0001
	ana   = 0xa1b2c3d4
)

func radioRecord() []byte {
	b, _ := json.Marshal(topics.RadioRecord{ID: gwID, Num: gwNum, Firmware: "2.7.26", HWModel: "TBEAM", Root: "msh/EU_868",
		Channels: []topics.ChannelRecord{{Index: 0, Name: "LongFast", Role: "PRIMARY"}, {Index: 1, Name: "farm", Role: "SECONDARY"}}})
	return b
}

func statusRecord(state topics.LinkState) []byte {
	b, _ := json.Marshal(topics.StatusRecord{State: state, Device: "tcp://radio", Since: "2026-11-25T20:00:00Z", Node: gwID})
	return b
}

// heard wraps a packet from a node as the radio side publishes it on MeshRX.
func heard(from uint32, port meshpb.PortNum, msg proto.Message, tune func(*meshpb.MeshPacket)) []byte {
	payload, _ := proto.Marshal(msg)
	p := &meshpb.MeshPacket{From: from, To: mesh.Broadcast, Id: 7, RxRssi: proto.Int32(-101), RxSnr: -3.25, HopLimit: 1, HopStart: 3,
		PayloadVariant: &meshpb.MeshPacket_Decoded{Decoded: &meshpb.Data{Portnum: port, Payload: payload, Bitfield: proto.Uint32(1)}}}
	if tune != nil {
		tune(p)
	}
	b, _ := proto.Marshal(&meshpb.ServiceEnvelope{Packet: p, ChannelId: "LongFast", GatewayId: gwID})
	return b
}

func deviceMetrics(m *meshpb.DeviceMetrics) *meshpb.Telemetry {
	return &meshpb.Telemetry{Variant: &meshpb.Telemetry_DeviceMetrics{DeviceMetrics: m}}
}

func keysOf(t *testing.T, bus *fakeBus, node string) []string {
	t.Helper()
	var out []string
	for _, topic := range bus.configs(DefaultPrefix) {
		levels := strings.Split(topic, "/")
		if levels[2] == node {
			out = append(out, levels[1]+"/"+levels[3])
		}
		for _, err := range validateDiscovery(DefaultPrefix, topic, bus.retained[topic]) {
			t.Error(err)
		}
	}
	return out
}

func nodeState(t *testing.T, bus *fakeBus, id string) topics.HassNodeState {
	t.Helper()
	var st topics.HassNodeState
	if err := json.Unmarshal(bus.retained[topics.HassNode(id)], &st); err != nil {
		t.Fatalf("state of %s: %v (%q)", id, err, bus.retained[topics.HassNode(id)])
	}
	return st
}

// Each entity is announced once its data has been heard, and not before.
func TestEntitiesFollowData(t *testing.T) {
	s, bus, _ := testState(t, nil)
	s.onStatus(topics.Status(gwID), statusRecord(topics.LinkOnline))
	s.onRadio(topics.Radio(gwID), radioRecord())
	if got, want := keysOf(t, bus, "sovereign_bridge_5eed0001"), []string{
		"binary_sensor/airtime", "binary_sensor/link", "sensor/airtime_budget", "sensor/airtime_used", "sensor/link_since", "sensor/link_state",
		"sensor/queue_depth", "text/send_ch0", "text/send_ch1",
	}; !slices.Equal(got, want) {
		t.Errorf("bridge entities %v, want %v", got, want)
	}
	if string(bus.retained[topics.HassAvailability]) != topics.HassOnline {
		t.Errorf("availability %q with the radio side online", bus.retained[topics.HassAvailability])
	}

	const node = "sovereign_a1b2c3d4"
	steps := []struct {
		what    string
		payload []byte
		want    []string // new entities
	}{
		{"a packet through MQTT", heard(ana, meshpb.PortNum_TEXT_MESSAGE_APP, &meshpb.Data{}, func(p *meshpb.MeshPacket) { p.ViaMqtt = true }), nil},
		{"a text", heard(ana, meshpb.PortNum_TEXT_MESSAGE_APP, &meshpb.Data{}, nil),
			[]string{"sensor/hops_away", "sensor/last_heard", "sensor/rssi", "sensor/snr", "text/send"}},
		{"device metrics, voltage NaN", heard(ana, meshpb.PortNum_TELEMETRY_APP, deviceMetrics(&meshpb.DeviceMetrics{
			BatteryLevel: proto.Uint32(101), Voltage: proto.Float32(float32(math.NaN())), ChannelUtilization: proto.Float32(12.5), AirUtilTx: proto.Float32(1.25),
		}), nil), []string{"sensor/air_util_tx", "sensor/battery", "sensor/channel_utilization"}},
		{"device metrics", heard(ana, meshpb.PortNum_TELEMETRY_APP, deviceMetrics(&meshpb.DeviceMetrics{Voltage: proto.Float32(4.15)}), nil),
			[]string{"sensor/voltage"}},
		{"environment metrics", heard(ana, meshpb.PortNum_TELEMETRY_APP, &meshpb.Telemetry{Variant: &meshpb.Telemetry_EnvironmentMetrics{EnvironmentMetrics: &meshpb.EnvironmentMetrics{
			Temperature: proto.Float32(21.5), RelativeHumidity: proto.Float32(55), BarometricPressure: proto.Float32(1013.2), Iaq: proto.Uint32(42),
		}}}, nil), []string{"sensor/humidity", "sensor/iaq", "sensor/pressure", "sensor/temperature"}},
		{"a position without a fix", heard(ana, meshpb.PortNum_POSITION_APP, &meshpb.Position{LatitudeI: proto.Int32(0), LongitudeI: proto.Int32(0)}, nil), nil},
		{"a position", heard(ana, meshpb.PortNum_POSITION_APP, &meshpb.Position{
			LatitudeI: proto.Int32(515000000), LongitudeI: proto.Int32(-1000000), Altitude: proto.Int32(43), PrecisionBits: 14,
		}, nil), []string{"device_tracker/position"}},
	}
	var have []string
	for _, step := range steps {
		s.onPacket(topics.MeshRX, step.payload)
		have = append(have, step.want...)
		slices.Sort(have)
		if got := keysOf(t, bus, node); !slices.Equal(got, have) {
			t.Errorf("after %s: entities %v, want %v", step.what, got, have)
		}
	}
	st := nodeState(t, bus, "!a1b2c3d4")
	if *st.BatteryLevel != 101 || *st.Voltage != 4.15 || *st.ChannelUtilization != 12.5 || *st.Temperature != 21.5 ||
		*st.BarometricPressure != 1013.2 || *st.RSSI != -101 || *st.SNR != -3.25 || *st.HopsAway != 2 ||
		*st.Latitude != 51.5 || *st.Longitude != -0.1 || *st.GPSAccuracy != 1459 || *st.Altitude != 43 || st.Via != gwID {
		b, _ := json.Marshal(st)
		t.Errorf("state %s", b)
	}

	// The radio's own packets carry no signal: no RSSI for the radio's node.
	s.onPacket(topics.MeshRX, heard(gwNum, meshpb.PortNum_TELEMETRY_APP, deviceMetrics(&meshpb.DeviceMetrics{BatteryLevel: proto.Uint32(80)}), nil))
	if got, want := keysOf(t, bus, "sovereign_5eed0001"), []string{"sensor/battery", "sensor/last_heard"}; !slices.Equal(got, want) {
		t.Errorf("the radio's own node: %v, want %v", got, want)
	}

	// A name changes the device of every entity.
	u := &meshpb.User{Id: "!a1b2c3d4", LongName: "Ana's T-Beam", ShortName: "ANA", HwModel: meshpb.HardwareModel_TBEAM}
	s.onPacket(topics.MeshRX, heard(ana, meshpb.PortNum_NODEINFO_APP, u, nil))
	for _, topic := range bus.configs(DefaultPrefix) {
		if strings.Contains(topic, node) && !strings.Contains(string(bus.retained[topic]), `"name":"Ana's T-Beam"`) {
			t.Errorf("%s does not carry the new name: %s", topic, bus.retained[topic])
		}
	}
}

// A node record announces a node the radio heard within the expiry, with
// its last-heard time; older ones, clocks never set, and nodes last heard
// through MQTT are left out.
func TestNodeRecords(t *testing.T) {
	s, bus, clk := testState(t, nil)
	rec := func(num uint32, lastHeard time.Time) []byte {
		b, _ := json.Marshal(topics.NodeRecord{ID: mesh.NodeID(num), Num: num, LongName: "n", LastHeard: uint32(lastHeard.Unix())})
		return b
	}
	s.onNode(topics.Node("!00000001"), rec(1, clk.now.Add(-time.Hour)))
	s.onNode(topics.Node("!00000002"), rec(2, clk.now.Add(-25*time.Hour)))
	s.onNode(topics.Node("!00000003"), rec(3, time.Unix(3600, 0)))
	// Heard within the expiry, but through MQTT: not a node of this mesh.
	viaMQTT, _ := json.Marshal(topics.NodeRecord{ID: "!00000004", Num: 4, LongName: "far", LastHeard: uint32(clk.now.Unix()), ViaMQTT: true})
	s.onNode(topics.Node("!00000004"), viaMQTT)
	if got := bus.configs(DefaultPrefix); !slices.Equal(got, []string{"homeassistant/sensor/sovereign_00000001/last_heard/config"}) {
		t.Errorf("configs %v", got)
	}
	if st := nodeState(t, bus, "!00000001"); st.LastHeard != "2026-11-25T19:00:00+00:00" {
		t.Errorf("last heard %q", st.LastHeard)
	}
}

// The nodes announced are bounded: the one heard least recently makes
// room, and is removed from Home Assistant.
func TestMaxNodes(t *testing.T) {
	s, bus, clk := testState(t, func(c *Config) { c.MaxNodes = 2 })
	for i := uint32(1); i <= 3; i++ {
		s.onPacket(topics.MeshRX, heard(i, meshpb.PortNum_TEXT_MESSAGE_APP, &meshpb.Data{}, nil))
		clk.now = clk.now.Add(time.Minute)
	}
	if len(s.nodes) != 2 || s.nodes[1] != nil {
		t.Errorf("nodes kept: %v", slices.Collect(maps.Keys(s.nodes)))
	}
	for _, topic := range bus.configs(DefaultPrefix) {
		if strings.Contains(topic, "sovereign_00000001") {
			t.Errorf("%s still announced", topic)
		}
	}
	if _, ok := bus.retained[topics.HassNode("!00000001")]; ok {
		t.Error("state of the removed node still retained")
	}
}

// A discovery topic is in the state directory before it is published, so
// a crash right after cannot leave a config the bridge would not remove.
func TestConfigSavedBeforePublished(t *testing.T) {
	s, bus, _ := testState(t, nil)
	checked := 0
	bus.onPublish = func(topic string, payload []byte) {
		if !strings.HasPrefix(topic, DefaultPrefix+"/") || len(payload) == 0 {
			return
		}
		b, err := os.ReadFile(filepath.Join(s.cfg.StateDir, stateFile))
		if err != nil || !strings.Contains(string(b), `"`+topic+`"`) {
			t.Errorf("%s published before it was saved (%v)", topic, err)
		}
		checked++
	}
	s.onStatus(topics.Status(gwID), statusRecord(topics.LinkOnline))
	s.onPacket(topics.MeshRX, heard(ana, meshpb.PortNum_TELEMETRY_APP, deviceMetrics(&meshpb.DeviceMetrics{BatteryLevel: proto.Uint32(50)}), nil))
	if checked < 8 {
		t.Errorf("only %d configs published", checked)
	}
}

// After a restart, what an earlier run announced is published again, and
// what expired meanwhile is removed, from the state directory alone: the
// broker (an embedded one) kept nothing.
func TestRestart(t *testing.T) {
	s, bus, clk := testState(t, nil)
	s.onStatus(topics.Status(gwID), statusRecord(topics.LinkOnline))
	s.onRadio(topics.Radio(gwID), radioRecord())
	s.onPacket(topics.MeshRX, heard(ana, meshpb.PortNum_TELEMETRY_APP, deviceMetrics(&meshpb.DeviceMetrics{BatteryLevel: proto.Uint32(50)}), nil))
	clk.now = clk.now.Add(time.Hour)
	s.onPacket(topics.MeshRX, heard(2, meshpb.PortNum_TEXT_MESSAGE_APP, &meshpb.Data{}, nil))
	s.stop()
	before := maps.Clone(bus.retained)

	restart := func(after time.Duration) *fakeBus {
		s2, bus2, clk2 := testState(t, func(c *Config) { c.StateDir = s.cfg.StateDir })
		clk2.now = clk.now.Add(after)
		s2.started = clk2.now
		s2.load()
		s2.restore()
		return bus2
	}
	bus2 := restart(time.Minute)
	for topic, payload := range before {
		if topic == topics.HassAvailability {
			continue
		}
		if string(bus2.retained[topic]) != string(payload) {
			t.Errorf("after a restart %s = %s, want %s", topic, bus2.retained[topic], payload)
		}
	}
	// 24h and 30 minutes later: ana (heard an hour before node 2) has
	// expired, node 2 has not.
	bus3 := restart(23*time.Hour + 30*time.Minute)
	var removed []string
	for _, p := range bus3.log {
		if len(p.payload) == 0 {
			removed = append(removed, p.topic)
		}
		if strings.Contains(p.topic, "a1b2c3d4") && len(p.payload) > 0 {
			t.Errorf("expired node published again: %s", p.topic)
		}
	}
	var want []string
	for topic := range before {
		if strings.Contains(topic, "a1b2c3d4") {
			want = append(want, topic)
		}
	}
	slices.Sort(removed)
	slices.Sort(want)
	if !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	if _, ok := bus3.retained["homeassistant/sensor/sovereign_00000002/last_heard/config"]; !ok {
		t.Error("node 2 not announced again")
	}
}

// Home Assistant's start makes Run publish everything again.
func TestBirth(t *testing.T) {
	s, _, _ := testState(t, nil)
	s.onHomeAssistant(StatusTopic(DefaultPrefix), []byte("offline"))
	select {
	case <-s.births:
		t.Fatal("offline taken as a start")
	default:
	}
	s.onHomeAssistant(StatusTopic(DefaultPrefix), []byte("online"))
	s.onHomeAssistant(StatusTopic(DefaultPrefix), []byte("online"))
	select {
	case <-s.births:
	default:
		t.Fatal("start not noticed")
	}
}

func TestGPSAccuracy(t *testing.T) {
	for bits, want := range map[uint32]float64{0: 0, 32: 0, 10: 23345, 13: 2918, 14: 1459, 16: 365, 19: 46} {
		if got := GPSAccuracy(bits); got != want {
			t.Errorf("GPSAccuracy(%d) = %v, want %v", bits, got, want)
		}
	}
}

func TestValidPrefix(t *testing.T) {
	for p, ok := range map[string]bool{"homeassistant": true, "ha/discovery": true, "": false, "home/#": false, "a/+/b": false,
		"/ha": false, "ha/": false, "a//b": false, "sovereign/hass": false} {
		if err := ValidPrefix(p); (err == nil) != ok {
			t.Errorf("ValidPrefix(%q) = %v", p, err)
		}
	}
}

// The schema check finds the mistakes Home Assistant would ignore.
func TestSchemaCheck(t *testing.T) {
	topic := "homeassistant/sensor/sovereign_a1b2c3d4/battery/config"
	for payload, want := range map[string]string{
		`{"state_topic":"s","unique_id":"u","name":"n"}`:                                              "",
		`{"state_topic":"s","stat_cla":"measurement"}`:                                                `"stat_cla"`,
		`{"unique_id":"u"}`:                                                                           `"state_topic" missing`,
		`{"state_topic":"s","device_class":"battery","unit_of_measurement":"V"}`:                      "takes [%]",
		`{"state_topic":"s","device_class":"timestamp","state_class":"measurement"}`:                  "no state_class",
		`{"state_topic":"s","device":{"identifiers":["x"]}}`:                                          "without unique_id",
		`{"state_topic":"s","unique_id":"u","device":{"identifiers":["x"],"via":"y"}}`:                `"via"`,
		`{"state_topic":"s","availability":[{"topic":"a","payload_on":"x"}]}`:                         `"payload_on"`,
		`{"state_topic":"s","expire_after":1.5}`:                                                      "whole number",
		`{"state_topic":"s","entity_category":"config"}`:                                              "diagnostic",
		`{"state_topic":"s/#"}`:                                                                       "wildcard",
		`{"state_topic":"s","device_class":"enum","options":["a"],"unit_of_measurement":"%"}`:         "options need",
		`{"state_topic":"s","origin":{"sw":"1"}}`:                                                     "origin without name",
		`{"state_topic":"s","device_class":"enum"}`:                                                   "needs options",
		`{"state_topic":"s","suggested_display_precision":-1}`:                                        "suggested_display_precision",
		`{"state_topic":"s","availability":[{"topic":"a"}],"availability_topic":"b"}`:                 "together",
		`{"state_topic":"s","device_class":"signal_strength","unit_of_measurement":"dBm","qos":3}`:    "qos",
		`{"state_topic":"s","device_class":"atmospheric_pressure","unit_of_measurement":"hPa"}`:       "",
		`{"state_topic":"s","device_class":"duration","unit_of_measurement":"s"}`:                     "",
		`{"state_topic":"s","device_class":"duration","unit_of_measurement":"sec"}`:                   "takes [d h min s ms]",
		`{"state_topic":"s","device_class":"humidity","unit_of_measurement":"%","state_class":"tot"}`: "state_class",
	} {
		errs := validateDiscovery(DefaultPrefix, topic, []byte(payload))
		switch {
		case want == "" && len(errs) > 0:
			t.Errorf("%s: %v", payload, errs)
		case want != "" && !strings.Contains(fmtErrs(errs), want):
			t.Errorf("%s: errors %v, want one mentioning %s", payload, errs, want)
		}
	}
	if errs := validateDiscovery(DefaultPrefix, "homeassistant/text/sovereign_1/send/config", []byte(`{"command_topic":"c","max":300}`)); len(errs) == 0 {
		t.Error("a text longer than 255 passed")
	}
	if errs := validateDiscovery(DefaultPrefix, "homeassistant/device_tracker/n.1/p/config", []byte(`{"json_attributes_topic":"a"}`)); len(errs) == 0 {
		t.Error("a node_id with a dot passed")
	}
	if errs := validateDiscovery(DefaultPrefix, "homeassistant/device_tracker/n/p/config", []byte(`{"name":"x"}`)); len(errs) == 0 {
		t.Error("a device tracker without a topic passed")
	}
}

func fmtErrs(errs []error) string {
	var b strings.Builder
	for _, e := range errs {
		b.WriteString(e.Error() + "\n")
	}
	return b.String()
}

// Republishes for Home Assistant's birth message are a minute apart at
// least, however often a client says "online".
func TestBirthSpacing(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		last   time.Time
		jitter time.Duration
		want   time.Duration
	}{
		{time.Time{}, 3 * time.Second, 3 * time.Second},                // none before
		{now.Add(-2 * time.Minute), time.Second, time.Second},          // long ago
		{now.Add(-10 * time.Second), time.Second, 50 * time.Second},    // just now: the rest of the minute
		{now.Add(-59 * time.Second), 4 * time.Second, 4 * time.Second}, // the jitter is longer
	} {
		if got := birthWait(tc.last, now, tc.jitter); got != tc.want {
			t.Errorf("birthWait(last %v ago, jitter %v) = %v, want %v", now.Sub(tc.last), tc.jitter, got, tc.want)
		}
	}
}
