package serialgw_test

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/internal/meshsim"
	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/serialgw"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// What the gateway announces of itself: its NodeInfo after each handshake
// and every few hours, and, opted in, the firmware's map report.

const simNum = 0x5eed0001

// seenMsg is one publication seen on the rig's broker, and when.
type seenMsg struct {
	topic   string
	payload []byte
	at      time.Time
}

// recorder keeps what the rig's broker delivers to an in-process
// subscription, which sees publications synchronously and in order.
type recorder struct {
	mu   sync.Mutex
	msgs []seenMsg
}

func (r *recorder) on(topic string) []seenMsg {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []seenMsg
	for _, m := range r.msgs {
		if m.topic == topic {
			out = append(out, m)
		}
	}
	return out
}

// startRecordedRig starts a rig whose broker is recorded from before the
// radio's first handshake: the radio ignores the bridge's requests until
// the subscription is in place.
func startRecordedRig(t *testing.T, tune func(*serialgw.Config), tuneSim ...func(*meshsim.Config)) (*rig, *recorder) {
	t.Helper()
	r := launchRig(t, tcpTransport, func(c *serialgw.Config) {
		c.HandshakeTimeout = 300 * time.Millisecond
		if tune != nil {
			tune(c)
		}
	}, func(radio *meshsim.Radio) { radio.IgnoreConfigRequests(1 << 30) }, tuneSim...)
	rec := &recorder{}
	for _, f := range []string{"msh/#", topics.MeshRX} {
		unsub, err := r.broker.Subscribe(f, func(topic string, b []byte) {
			rec.mu.Lock()
			rec.msgs = append(rec.msgs, seenMsg{topic, append([]byte(nil), b...), time.Now()})
			rec.mu.Unlock()
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(unsub)
	}
	r.radio.IgnoreConfigRequests(0)
	testutil.Eventually(t, wait, func() bool { return r.radio.Ready() && r.gw.Up() }, "bridge never completed the handshake")
	return r, rec
}

// settle injects a text heard on the mesh and waits until the bridge has
// published it: everything the bridge did before reading it is published.
func (r *rig) settle(t *testing.T, rec *recorder) {
	t.Helper()
	p := r.radio.TextPacket(0x13572468, "marker")
	r.radio.Inject(p)
	testutil.Eventually(t, wait, func() bool {
		for _, m := range rec.on(topics.MeshRX) {
			var env meshpb.ServiceEnvelope
			if proto.Unmarshal(m.payload, &env) == nil && env.GetPacket().GetId() == p.GetId() {
				return true
			}
		}
		return false
	}, "marker packet never published")
}

// rehandshake reboots the radio and waits for the bridge's next handshake.
func (r *rig) rehandshake(t *testing.T) {
	t.Helper()
	n := r.radio.Handshakes()
	r.radio.Reboot()
	testutil.Eventually(t, wait, func() bool { return r.radio.Handshakes() == n+1 && r.radio.Ready() }, "handshakes = %d", r.radio.Handshakes())
}

// decrypt opens an encrypted envelope with the default LongFast key.
func decrypt(t *testing.T, env *meshpb.ServiceEnvelope) *meshpb.Data {
	t.Helper()
	p := env.GetPacket()
	if p.GetEncrypted() == nil || p.GetChannel() != 8 {
		t.Fatalf("envelope not encrypted with the LongFast key: %v", env)
	}
	key, _ := mesh.ExpandPSK([]byte{1})
	plain, err := mesh.Crypt(key, p.GetFrom(), p.GetId(), p.GetEncrypted())
	if err != nil {
		t.Fatal(err)
	}
	var d meshpb.Data
	if err := proto.Unmarshal(plain, &d); err != nil {
		t.Fatalf("decrypted Data: %v", err)
	}
	return &d
}

// jsonOf decodes a JSON publication.
func jsonOf(t *testing.T, m seenMsg) map[string]any {
	t.Helper()
	var js map[string]any
	if err := json.Unmarshal(m.payload, &js); err != nil {
		t.Fatalf("%s: %v", m.topic, err)
	}
	return js
}

const (
	simEnvTopic  = "msh/EU_868/2/e/LongFast/!5eed0001"
	simJSONTopic = "msh/EU_868/2/json/LongFast/!5eed0001"
	simMapTopic  = "msh/EU_868/2/map/"
)

// nodeInfos returns the JSON forms of the radio's own NodeInfo.
func nodeInfos(t *testing.T, rec *recorder) []map[string]any {
	var out []map[string]any
	for _, m := range rec.on(simJSONTopic) {
		if js := jsonOf(t, m); js["type"] == "nodeinfo" && js["from"] == float64(simNum) {
			out = append(out, js)
		}
	}
	return out
}

// The radio's NodeInfo goes on e/ and json/ after each handshake, as the
// firmware broadcasts it, and never on the bridge topic.
func TestOwnNodeInfo(t *testing.T) {
	r, rec := startRecordedRig(t, nil)
	testutil.Eventually(t, wait, func() bool { return len(nodeInfos(t, rec)) == 1 }, "no NodeInfo after the handshake")
	js := nodeInfos(t, rec)[0]
	want := map[string]any{"id": "!5eed0001", "longname": "SovereignRelay Sim", "shortname": "SIM", "hardware": float64(meshpb.HardwareModel_TBEAM), "role": float64(0)}
	if p, _ := js["payload"].(map[string]any); js["sender"] != "!5eed0001" || js["to"] != float64(mesh.Broadcast) || js["channel"] != float64(0) || len(p) != len(want) {
		t.Errorf("NodeInfo JSON = %v", js)
	} else {
		for k, v := range want {
			if p[k] != v {
				t.Errorf("NodeInfo JSON payload %s = %v, want %v", k, p[k], v)
			}
		}
	}
	id := uint32(js["id"].(float64))

	var envs []*meshpb.ServiceEnvelope
	for _, m := range rec.on(simEnvTopic) {
		env := new(meshpb.ServiceEnvelope)
		if err := proto.Unmarshal(m.payload, env); err != nil {
			t.Fatal(err)
		}
		if env.GetPacket().GetId() == id {
			envs = append(envs, env)
		}
	}
	if len(envs) != 1 {
		t.Fatalf("%d envelopes of the NodeInfo, want 1", len(envs))
	}
	env := envs[0]
	d := decrypt(t, env)
	var u meshpb.User
	if err := proto.Unmarshal(d.GetPayload(), &u); err != nil || d.GetPortnum() != meshpb.PortNum_NODEINFO_APP || u.GetLongName() != "SovereignRelay Sim" || u.GetId() != "!5eed0001" {
		t.Errorf("NodeInfo envelope Data = %v, User %v (%v)", d, &u, err)
	}
	if p := env.GetPacket(); p.GetFrom() != simNum || p.GetTo() != mesh.Broadcast || env.GetGatewayId() != "!5eed0001" || env.GetChannelId() != "LongFast" {
		t.Errorf("NodeInfo envelope = %v", env)
	}

	// After each handshake again; in between not before the interval.
	r.rehandshake(t)
	r.settle(t, rec)
	if n := len(nodeInfos(t, rec)); n != 2 {
		t.Errorf("%d NodeInfos after two handshakes, want 2", n)
	}
	for _, m := range rec.on(topics.MeshRX) {
		var env meshpb.ServiceEnvelope
		if proto.Unmarshal(m.payload, &env) == nil && env.GetPacket().GetFrom() == simNum {
			t.Errorf("the radio's own packet on %s: %v", topics.MeshRX, &env)
		}
	}
}

// The NodeInfo is published again every NodeInfoInterval.
func TestOwnNodeInfoRepeats(t *testing.T) {
	const every = time.Second
	_, rec := startRecordedRig(t, func(c *serialgw.Config) { c.NodeInfoInterval = every })
	testutil.Eventually(t, wait, func() bool { return len(nodeInfos(t, rec)) >= 3 }, "NodeInfo not repeated")
	// That it waits for the interval in between is TestOwnNodeInfo's (an
	// hour's interval, a new handshake): timings are not asserted here.
}

// mapReports decodes what was published on the map topic.
func mapReports(t *testing.T, rec *recorder, topic string) []*meshpb.MapReport {
	t.Helper()
	var out []*meshpb.MapReport
	for _, m := range rec.on(topic) {
		var env meshpb.ServiceEnvelope
		if err := proto.Unmarshal(m.payload, &env); err != nil {
			t.Fatalf("map envelope: %v", err)
		}
		p := env.GetPacket()
		if env.GetChannelId() != "LongFast" || env.GetGatewayId() != "!5eed0001" || p.GetFrom() != simNum || p.GetTo() != mesh.Broadcast ||
			p.GetId() == 0 || p.GetDecoded().GetPortnum() != meshpb.PortNum_MAP_REPORT_APP {
			t.Fatalf("map envelope = %v", &env)
		}
		rep := new(meshpb.MapReport)
		if err := proto.Unmarshal(p.GetDecoded().GetPayload(), rep); err != nil {
			t.Fatalf("MapReport: %v", err)
		}
		out = append(out, rep)
	}
	return out
}

// anyMapReport reports whether anything was published on a map topic.
func anyMapReport(rec *recorder) bool {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, m := range rec.msgs {
		if strings.HasSuffix(m.topic, "/2/map/") {
			return true
		}
	}
	return false
}

var ridge = &meshpb.Position{LatitudeI: proto.Int32(515100000), LongitudeI: proto.Int32(-900000), Altitude: proto.Int32(43)}

func withPosition(c *meshsim.Config) { c.Position, c.ReportLocation = ridge, true }

// Opted in, the firmware's map report goes on <root>/2/map/ after the
// handshake: the radio's names, hardware, firmware, region, preset,
// default channel, its position at the configured precision and the number
// of nodes heard in the last two hours; a new handshake within the hour
// sends none.
func TestMapReport(t *testing.T) {
	r, rec := startRecordedRig(t, func(c *serialgw.Config) { c.MapReport = true }, withPosition)
	testutil.Eventually(t, wait, func() bool { return len(rec.on(simMapTopic)) == 1 }, "no map report after the handshake")
	want := &meshpb.MapReport{
		LongName: "SovereignRelay Sim", ShortName: "SIM", Role: meshpb.Config_DeviceConfig_CLIENT, HwModel: meshpb.HardwareModel_TBEAM,
		FirmwareVersion: "2.7.26.sim", Region: meshpb.Config_LoRaConfig_EU_868, ModemPreset: meshpb.Config_LoRaConfig_LONG_FAST,
		HasDefaultChannel: true, LatitudeI: 514981888, LongitudeI: -917504, Altitude: 43, PositionPrecision: 14,
		NumOnlineLocalNodes: 3, HasOptedReportLocation: true,
	}
	if got := mapReports(t, rec, simMapTopic)[0]; !proto.Equal(got, want) {
		t.Errorf("map report = %v\nwant         %v", got, want)
	}
	r.rehandshake(t)
	r.settle(t, rec)
	if n := len(rec.on(simMapTopic)); n != 1 {
		t.Errorf("%d map reports within the hour, want 1", n)
	}
}

// Map reports come again every MapReportInterval, at the configured
// precision.
func TestMapReportInterval(t *testing.T) {
	const every = time.Second
	_, rec := startRecordedRig(t, func(c *serialgw.Config) {
		c.MapReport, c.MapReportInterval, c.MapReportPrecision = true, every, 12
	}, withPosition)
	testutil.Eventually(t, wait, func() bool { return len(rec.on(simMapTopic)) >= 3 }, "map report not repeated")
	// That none comes sooner is TestMapReport's (an hour's interval, a
	// new handshake): timings are not asserted here.
	for _, rep := range mapReports(t, rec, simMapTopic) {
		if rep.GetLatitudeI() != 515375104 || rep.GetLongitudeI() != -524288 || rep.GetPositionPrecision() != 12 {
			t.Errorf("position at 12 bits = %d, %d (%d bits)", rep.GetLatitudeI(), rep.GetLongitudeI(), rep.GetPositionPrecision())
		}
	}
}

// A radio that does not know where it is, or whose owner did not consent
// to report it (map_report_settings.should_report_location), reports
// without a position.
func TestMapReportWithoutPosition(t *testing.T) {
	t.Run("unknown", func(t *testing.T) { mapReportWithoutPosition(t) })
	t.Run("no consent", func(t *testing.T) {
		mapReportWithoutPosition(t, func(c *meshsim.Config) { c.Position, c.ReportLocation = ridge, false })
	})
}

func mapReportWithoutPosition(t *testing.T, sim ...func(*meshsim.Config)) {
	_, rec := startRecordedRig(t, func(c *serialgw.Config) { c.MapReport = true }, sim...)
	testutil.Eventually(t, wait, func() bool { return len(rec.on(simMapTopic)) == 1 }, "no map report after the handshake")
	rep := mapReports(t, rec, simMapTopic)[0]
	if rep.GetLatitudeI() != 0 || rep.GetLongitudeI() != 0 || rep.GetPositionPrecision() != 0 || rep.GetHasOptedReportLocation() ||
		rep.GetLongName() != "SovereignRelay Sim" || rep.GetNumOnlineLocalNodes() != 3 {
		t.Errorf("map report = %v", rep)
	}
}

// No map report unless opted in, nor from a radio without a region.
func TestNoMapReport(t *testing.T) {
	t.Run("not opted in", func(t *testing.T) {
		r, rec := startRecordedRig(t, nil, withPosition)
		r.settle(t, rec)
		if anyMapReport(rec) {
			t.Error("map report published without --map-report")
		}
	})
	t.Run("no region", func(t *testing.T) {
		r, rec := startRecordedRig(t, func(c *serialgw.Config) { c.MapReport = true }, withPosition,
			func(c *meshsim.Config) { c.Region = meshpb.Config_LoRaConfig_UNSET })
		r.settle(t, rec)
		if anyMapReport(rec) {
			t.Error("map report published by a radio without a region")
		}
	})
}

// A radio in client proxy mode that uplinks its channel publishes what it
// sends itself, through the bridge: the bridge adds no copy of its texts
// or of its NodeInfo.
func TestOwnPacketsClientProxy(t *testing.T) {
	r, rec := startRecordedRig(t, nil, func(c *meshsim.Config) { c.ClientProxy = true })
	res := r.results(t)
	r.send(t, 1, "", "the radio publishes this itself")
	res.wait(t, 1, meshpb.Routing_NONE)
	// A handshake publishes what the radio took before it.
	r.rehandshake(t)
	r.settle(t, rec)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, m := range rec.msgs {
		if !strings.HasPrefix(m.topic, "msh/") {
			continue
		}
		var env meshpb.ServiceEnvelope
		if proto.Unmarshal(m.payload, &env) == nil && env.GetPacket().GetFrom() == simNum {
			t.Errorf("bridge published the radio's own packet on %s: %v", m.topic, &env)
		}
		if strings.Contains(m.topic, "/2/json/") {
			t.Errorf("JSON from a radio that publishes itself: %s %s", m.topic, m.payload)
		}
	}
}
