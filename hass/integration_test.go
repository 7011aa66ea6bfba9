//go:build integration

package hass

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/broker"
	"github.com/jshiffer/lora-xmpp-bridge/internal/meshsim"
	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/serialgw"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// Integration tests: the embedded broker, a simulated radio behind the
// real radio link (serialgw), the publisher, and Home Assistant's view of
// the broker through real mosquitto clients. Every template published is
// rendered with a real Jinja2.

var update = flag.Bool("update", false, "rewrite the golden discovery payloads in testdata/golden")

const wait = 20 * time.Second

// marker is retained on every rig broker: a subscriber that has it has
// been given everything retained before it.
const marker = "hass-test/ready"

type rig struct {
	radio    *meshsim.Radio
	broker   *broker.Embedded
	host     string
	port     string
	radioDev serialgw.Device
	radioDir string
	hassDir  string

	radioSide *serialgw.Gateway
	stopRadio func()
	stopHass  func()
}

// newBroker starts an embedded broker whose access rules are the daemon's:
// local tools (user "tool") read everything and write the JSON downlink
// and Home Assistant's status topic.
func newBroker(t *testing.T) (*broker.Embedded, string, string) {
	t.Helper()
	users := filepath.Join(t.TempDir(), "users.yaml")
	if err := os.WriteFile(users, []byte("users:\n  tool:\n    password: tool-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	haStatus := StatusTopic(DefaultPrefix)
	b, err := broker.NewEmbedded(broker.Config{Listen: "127.0.0.1:0", CredentialsFile: users,
		IsDownlink: func(topic string) bool { return topics.IsJSONDownlink(topic) || topic == haStatus },
		IsOwn:      topics.IsBridgeTopic}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if err := b.Publish(marker, []byte("1"), true); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(b.Addr())
	return b, host, port
}

func startRig(t *testing.T, tune func(*Config)) *rig {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	simCfg := meshsim.Demo()
	simCfg.TrafficInterval = 0 // the tests say what is heard
	radio := meshsim.New(simCfg)
	addr, serve, err := radio.ListenTCP(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); serve() }()
	t.Cleanup(func() { cancel(); <-served })
	b, host, port := newBroker(t)
	r := &rig{radio: radio, broker: b, host: host, port: port, radioDir: t.TempDir(), hassDir: t.TempDir(),
		radioDev: serialgw.Device{Kind: "tcp", Addr: addr.String()}}
	r.stopHass = startHass(t, b, r.hassDir, tune)
	r.startRadioSide(t)
	testutil.Eventually(t, wait, func() bool { return radio.Ready() && r.radioSide.Up() }, "the radio link never came up")
	return r
}

// startHass runs a publisher on b until the returned function stops it.
func startHass(t *testing.T, b Bus, dir string, tune func(*Config)) (stop func()) {
	t.Helper()
	cfg := Config{StateDir: dir, Sweep: 50 * time.Millisecond, SaveInterval: 100 * time.Millisecond, BirthDelay: 20 * time.Millisecond}
	if tune != nil {
		tune(&cfg)
	}
	g, err := New(cfg, b, testLog())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	select {
	case <-g.Subscribed():
	case err := <-done:
		t.Fatalf("hass Run: %v", err)
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("hass Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// startRadioSide runs the radio link against the simulated radio.
func (r *rig) startRadioSide(t *testing.T) {
	t.Helper()
	gw, err := serialgw.New(serialgw.Config{
		Device: r.radioDev, Encrypt: true, StateDir: r.radioDir,
		TextInterval: 2100 * time.Millisecond, HeartbeatInterval: 2 * time.Second, ReplyTimeout: 2 * time.Second,
		HandshakeTimeout: 5 * time.Second, BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
		StatusInterval: 50 * time.Millisecond,
	}, r.broker, testLog())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Run(ctx) }()
	r.radioSide = gw
	stopped := false
	r.stopRadio = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("radio side Run: %v", err)
		}
	}
	t.Cleanup(r.stopRadio)
}

// msg is one line of mosquitto_sub -F '%r %t %p'.
type msg struct {
	retained bool
	topic    string
	payload  string
}

func parseLine(line string) msg {
	f := strings.SplitN(line, " ", 3)
	m := msg{retained: f[0] == "1"}
	if len(f) > 1 {
		m.topic = f[1]
	}
	if len(f) > 2 {
		m.payload = f[2]
	}
	return m
}

// watcher is a real mosquitto_sub, logged in as a local tool.
type watcher struct{ lines *testutil.Lines }

func subscribe(t *testing.T, host, port string, filters ...string) *watcher {
	t.Helper()
	testutil.NeedCommand(t, "mosquitto_sub")
	args := []string{"-h", host, "-p", port, "-u", "tool", "-P", "tool-pw", "-F", "%r %t %p"}
	for _, f := range append(filters, marker) {
		args = append(args, "-t", f)
	}
	w := &watcher{testutil.Start(t, "mosquitto_sub", args...)}
	w.lines.WaitFor(t, wait, func(s string) bool { return parseLine(s).topic == marker })
	return w
}

func (r *rig) subscribe(t *testing.T, filters ...string) *watcher {
	return subscribe(t, r.host, r.port, filters...)
}

func (w *watcher) all() []msg {
	var out []msg
	for _, l := range w.lines.All() {
		out = append(out, parseLine(l))
	}
	return out
}

// latest is the last payload seen on topic.
func (w *watcher) latest(topic string) (string, bool) {
	var p string
	found := false
	for _, m := range w.all() {
		if m.topic == topic {
			p, found = m.payload, true
		}
	}
	return p, found
}

// current maps every topic to its last payload, for the topics matching
// keep.
func (w *watcher) current(keep func(string) bool) map[string]string {
	out := map[string]string{}
	for _, m := range w.all() {
		if keep(m.topic) {
			out[m.topic] = m.payload
		}
	}
	return out
}

func (w *watcher) waitLatest(t *testing.T, topic string, ok func(string) bool, what string) string {
	t.Helper()
	var p string
	testutil.Eventually(t, wait, func() bool {
		var found bool
		p, found = w.latest(topic)
		return found && ok(p)
	}, "%s: %s is %q", what, topic, p)
	return p
}

func nonEmpty(p string) bool { return p != "" }

// packet is a packet from a node on the primary channel, heard two hops
// away at -101 dBm.
func packet(from uint32, port meshpb.PortNum, m proto.Message) *meshpb.MeshPacket {
	payload, _ := proto.Marshal(m)
	return &meshpb.MeshPacket{From: from, To: mesh.Broadcast, Id: rand.Uint32() | 1, RxTime: proto.Uint32(uint32(time.Now().Unix())),
		RxRssi: proto.Int32(-101), RxSnr: -3.25, HopLimit: 1, HopStart: 3,
		PayloadVariant: &meshpb.MeshPacket_Decoded{Decoded: &meshpb.Data{Portnum: port, Payload: payload, Bitfield: proto.Uint32(1)}}}
}

func (r *rig) inject(t *testing.T, p *meshpb.MeshPacket) {
	t.Helper()
	if !r.radio.Inject(p) {
		t.Fatal("the radio has no client to hand the packet to")
	}
}

// anaSpeaks makes Ana's T-Beam send its telemetry and position.
func (r *rig) anaSpeaks(t *testing.T) {
	t.Helper()
	r.inject(t, packet(ana, meshpb.PortNum_TELEMETRY_APP, &meshpb.Telemetry{Variant: &meshpb.Telemetry_DeviceMetrics{DeviceMetrics: &meshpb.DeviceMetrics{
		BatteryLevel: proto.Uint32(101), Voltage: proto.Float32(4.15), ChannelUtilization: proto.Float32(12.5), AirUtilTx: proto.Float32(1.25), UptimeSeconds: proto.Uint32(7200),
	}}}))
	r.inject(t, packet(ana, meshpb.PortNum_TELEMETRY_APP, &meshpb.Telemetry{Variant: &meshpb.Telemetry_EnvironmentMetrics{EnvironmentMetrics: &meshpb.EnvironmentMetrics{
		Temperature: proto.Float32(21.5), RelativeHumidity: proto.Float32(55), BarometricPressure: proto.Float32(1013.2), Iaq: proto.Uint32(42),
	}}}))
	r.inject(t, packet(ana, meshpb.PortNum_POSITION_APP, &meshpb.Position{
		LatitudeI: proto.Int32(515000000), LongitudeI: proto.Int32(-1000000), Altitude: proto.Int32(43), PrecisionBits: 14,
	}))
}

const (
	anaNode    = "sovereign_a1b2c3d4"
	bridgeNode = "sovereign_bridge_5eed0001"
	xmppNode   = "sovereign_xmpp_bridge_example_org_5d0803ae" // xmppJID's
)

// oldStatus is a status record as radio sides published it before they
// told their queue and airtime (the README's example).
const oldStatus = `{"state":"online","device":"tcp://127.0.0.1:36739","since":"2026-11-25T20:38:31Z","node":"!5eed0001"}`

func configTopic(component, node, key string) string {
	return DefaultPrefix + "/" + component + "/" + node + "/" + key + "/config"
}

func isConfig(topic string) bool {
	return strings.HasPrefix(topic, DefaultPrefix+"/") && strings.HasSuffix(topic, "/config")
}

// The whole of it as Home Assistant sees it: the nodes of the radio's node
// database appear with what is known of them; each sensor appears once
// its data has been heard, never before; every payload follows Home
// Assistant's schema and the golden files; every template renders with a
// real Jinja2 over the real state payloads to the value heard; the state
// is retained for a dashboard that subscribes later; and the text
// entities' commands reach the radio as texts.
func TestDiscovery(t *testing.T) {
	r := startRig(t, nil)
	w := r.subscribe(t, DefaultPrefix+"/#", "sovereign/#")
	// An XMPP side logged in as bridge@example.org, in one room.
	if err := r.broker.Publish(topics.XMPPStatus(xmppJID), xmppRecord(t, topics.LinkOnline, 1), true); err != nil {
		t.Fatal(err)
	}

	// Ana is in the radio's node database, heard a minute ago.
	w.waitLatest(t, configTopic(componentSensor, anaNode, "last_heard"), nonEmpty, "Ana from the node database")
	w.waitLatest(t, configTopic(componentText, bridgeNode, "send_ch0"), nonEmpty, "the bridge's channel")
	w.waitLatest(t, configTopic(componentText, anaNode, "send"), nonEmpty, "Ana's direct messages")
	for _, c := range []struct{ component, key string }{
		{componentSensor, "battery"}, {componentSensor, "voltage"}, {componentSensor, "temperature"}, {componentSensor, "iaq"},
		{componentSensor, "rssi"}, {componentDeviceTracker, "position"},
	} {
		if p, ok := w.latest(configTopic(c.component, anaNode, c.key)); ok {
			t.Errorf("%s/%s announced before Ana sent it: %s", c.component, c.key, p)
		}
	}

	r.anaSpeaks(t)
	r.inject(t, packet(0x13572468, meshpb.PortNum_TEXT_MESSAGE_APP, &meshpb.Data{})) // Kofi says something
	state := w.waitLatest(t, topics.HassNode("!a1b2c3d4"), func(p string) bool {
		return strings.Contains(p, `"temperature"`) && strings.Contains(p, `"latitude"`) && strings.Contains(p, `"battery_level"`)
	}, "Ana's state")
	var st topics.HassNodeState
	if err := json.Unmarshal([]byte(state), &st); err != nil {
		t.Fatal(err)
	}
	if st.LongName != "Ana's T-Beam" || st.HWModel != "TBEAM" || st.Via != "!5eed0001" || *st.BatteryLevel != 101 || *st.Voltage != 4.15 ||
		*st.IAQ != 42 || *st.GPSAccuracy != 1459 || *st.RSSI != -101 || *st.HopsAway != 2 {
		t.Errorf("Ana's state: %s", state)
	}
	want := map[string]bool{}
	for _, c := range []struct{ component, node, key string }{
		{componentBinarySensor, bridgeNode, "link"}, {componentBinarySensor, bridgeNode, "airtime"},
		{componentSensor, bridgeNode, "link_state"}, {componentSensor, bridgeNode, "link_since"}, {componentText, bridgeNode, "send_ch0"},
		{componentSensor, bridgeNode, "queue_depth"}, {componentSensor, bridgeNode, "airtime_used"}, {componentSensor, bridgeNode, "airtime_budget"},
		{componentBinarySensor, xmppNode, "connected"}, {componentSensor, xmppNode, "rooms"}, {componentSensor, xmppNode, "since"},
		{componentDeviceTracker, anaNode, "position"}, {componentText, anaNode, "send"},
		{componentText, "sovereign_13572468", "send"}, {componentText, "sovereign_0badcafe", "send"},
		{componentSensor, "sovereign_0badcafe", "last_heard"},
	} {
		want[configTopic(c.component, c.node, c.key)] = true
	}
	for _, key := range []string{"last_heard", "rssi", "snr", "hops_away", "battery", "voltage", "channel_utilization", "air_util_tx",
		"temperature", "humidity", "pressure", "iaq"} {
		want[configTopic(componentSensor, anaNode, key)] = true
	}
	for _, key := range []string{"last_heard", "rssi", "snr", "hops_away"} {
		want[configTopic(componentSensor, "sovereign_13572468", key)] = true
	}
	var configs map[string]string
	testutil.Eventually(t, wait, func() bool {
		configs = w.current(isConfig)
		for topic := range want {
			if configs[topic] == "" {
				return false
			}
		}
		return true
	}, "not every entity was announced: have %v", slices.Sorted(maps.Keys(configs)))
	if extra := slices.DeleteFunc(slices.Sorted(maps.Keys(configs)), func(t string) bool { return want[t] }); len(extra) > 0 {
		t.Errorf("entities announced that were not heard: %v", extra)
	}

	// Home Assistant's schema, and the golden files.
	for _, topic := range slices.Sorted(maps.Keys(configs)) {
		for _, err := range validateDiscovery(DefaultPrefix, topic, []byte(configs[topic])) {
			t.Error(err)
		}
		checkGolden(t, topic, configs[topic])
	}

	// Every template, rendered with Jinja2 over the payloads Home
	// Assistant receives.
	payloads := w.current(func(string) bool { return true })
	const text = `Grüße 🌄 "quoted" <b> & \ done`
	results := renderAll(t, configs, payloads, text)
	wantValues := map[string]string{
		configTopic(componentSensor, anaNode, "battery"):             "100", // 101: on external power
		configTopic(componentSensor, anaNode, "voltage"):             "4.15",
		configTopic(componentSensor, anaNode, "channel_utilization"): "12.5",
		configTopic(componentSensor, anaNode, "air_util_tx"):         "1.25",
		configTopic(componentSensor, anaNode, "temperature"):         "21.5",
		configTopic(componentSensor, anaNode, "humidity"):            "55",
		configTopic(componentSensor, anaNode, "pressure"):            "1013.2",
		configTopic(componentSensor, anaNode, "iaq"):                 "42",
		configTopic(componentSensor, anaNode, "rssi"):                "-101",
		configTopic(componentSensor, anaNode, "snr"):                 "-3.25",
		configTopic(componentSensor, anaNode, "hops_away"):           "2",
		configTopic(componentBinarySensor, bridgeNode, "link"):       "ON",
		configTopic(componentBinarySensor, bridgeNode, "airtime"):    "OFF",
		configTopic(componentSensor, bridgeNode, "link_state"):       string(topics.LinkOnline),
		// Nothing sent yet: the queue and the airtime used are left out of
		// the record, and read 0; EU_868's hour allows 360 s, half of it
		// for the bridge.
		configTopic(componentSensor, bridgeNode, "queue_depth"):    "0",
		configTopic(componentSensor, bridgeNode, "airtime_used"):   "0",
		configTopic(componentSensor, bridgeNode, "airtime_budget"): "180",
		configTopic(componentBinarySensor, xmppNode, "connected"):  "ON",
		configTopic(componentSensor, xmppNode, "rooms"):            "1",
		configTopic(componentSensor, xmppNode, "since"):            "2026-11-25T20:00:00Z",
	}
	for topic, want := range wantValues {
		if got := results[topic].value; got != want {
			t.Errorf("%s renders %q, want %q", topic, got, want)
		}
	}
	for _, key := range []string{"last_heard"} {
		got := results[configTopic(componentSensor, anaNode, key)].value
		if ts, err := time.Parse(time.RFC3339, got); err != nil || time.Since(ts) > time.Minute || time.Since(ts) < -time.Second {
			t.Errorf("last heard renders %q (%v)", got, err)
		}
	}
	var attrs map[string]any
	if err := json.Unmarshal([]byte(results[configTopic(componentDeviceTracker, anaNode, "position")].attributes), &attrs); err != nil ||
		attrs["latitude"] != 51.5 || attrs["longitude"] != -0.1 || attrs["gps_accuracy"] != 1459.0 || attrs["altitude"] != 43.0 {
		t.Errorf("position attributes render %v (%v)", attrs, err)
	}

	// A dashboard that subscribes now sees the state at once: retained.
	later := r.subscribe(t, topics.HassNode("!a1b2c3d4"))
	if m := later.all(); len(m) < 1 || m[0].topic != topics.HassNode("!a1b2c3d4") || !m[0].retained || m[0].payload != state {
		t.Errorf("a later subscriber got %+v, want the retained state %s", m, state)
	}

	// Home Assistant sends what the text entities' command templates
	// render, on their command topics, as a local tool: the radio sends it.
	for _, c := range []struct {
		topic string
		to    uint32
	}{
		{configTopic(componentText, bridgeNode, "send_ch0"), mesh.Broadcast},
		{configTopic(componentText, anaNode, "send"), ana},
	} {
		var cfg map[string]any
		json.Unmarshal([]byte(configs[c.topic]), &cfg)
		cmd := results[c.topic].command
		if _, err := mesh.ParseDownlink([]byte(cmd), gwNum); err != nil {
			t.Errorf("%s: command %s: %v", c.topic, cmd, err)
		}
		testutil.NeedCommand(t, "mosquitto_pub")
		if out, err := exec.Command("mosquitto_pub", "-h", r.host, "-p", r.port, "-u", "tool", "-P", "tool-pw",
			"-t", cfg["command_topic"].(string), "-m", cmd).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub: %v %s", err, out)
		}
		testutil.Eventually(t, wait, func() bool {
			return slices.ContainsFunc(r.radio.Received(), func(p *meshpb.MeshPacket) bool {
				return p.GetTo() == c.to && p.GetDecoded().GetPortnum() == meshpb.PortNum_TEXT_MESSAGE_APP && string(p.GetDecoded().GetPayload()) == text
			})
		}, "%s: the radio never got the text to %x", c.topic, c.to)
	}

	// The radio side's status as it published it while the texts went out
	// (the second waits for the text spacing): with a queue, then with the
	// airtime they used. The templates render those real payloads, a
	// record from a radio side that predates the queue and the airtime,
	// and the XMPP side's record once it is offline.
	var queued, spent string
	var queuedRec, spentRec topics.StatusRecord
	testutil.Eventually(t, wait, func() bool {
		for _, m := range w.all() {
			var rec topics.StatusRecord
			if m.topic != topics.Status("!5eed0001") || json.Unmarshal([]byte(m.payload), &rec) != nil {
				continue
			}
			if rec.QueueDepth > 0 && queued == "" {
				queued, queuedRec = m.payload, rec
			}
			if rec.AirtimeUsed > 0 && rec.QueueDepth == 0 {
				spent, spentRec = m.payload, rec
			}
		}
		return queued != "" && spent != ""
	}, "the radio side never published its queue and airtime while sending")
	offline := string(xmppRecord(t, topics.LinkOffline, 0))
	cases := []struct{ topic, payload, want string }{
		{configTopic(componentSensor, bridgeNode, "queue_depth"), queued, strconv.Itoa(queuedRec.QueueDepth)},
		{configTopic(componentSensor, bridgeNode, "airtime_used"), spent, strconv.FormatFloat(spentRec.AirtimeUsed, 'f', -1, 64)},
		{configTopic(componentSensor, bridgeNode, "airtime_budget"), spent, "180"},
		{configTopic(componentBinarySensor, bridgeNode, "link"), spent, "ON"},
		{configTopic(componentSensor, bridgeNode, "queue_depth"), oldStatus, "0"},
		{configTopic(componentSensor, bridgeNode, "airtime_used"), oldStatus, "0"},
		{configTopic(componentSensor, bridgeNode, "airtime_budget"), oldStatus, "0"},
		{configTopic(componentBinarySensor, bridgeNode, "link"), oldStatus, "ON"},
		{configTopic(componentBinarySensor, bridgeNode, "airtime"), oldStatus, "OFF"},
		{configTopic(componentSensor, bridgeNode, "link_state"), oldStatus, string(topics.LinkOnline)},
		{configTopic(componentSensor, bridgeNode, "link_since"), oldStatus, "2026-11-25T20:38:31Z"},
		{configTopic(componentBinarySensor, xmppNode, "connected"), offline, "OFF"},
		{configTopic(componentSensor, xmppNode, "rooms"), offline, "0"},
	}
	var jobs []jinjaJob
	for _, c := range cases {
		var cfg map[string]any
		json.Unmarshal([]byte(configs[c.topic]), &cfg)
		jobs = append(jobs, jinjaJob{Template: cfg["value_template"].(string), Payload: &c.payload})
	}
	for i, res := range renderJinja(t, jobs) {
		if c := cases[i]; res.Error != "" || res.Result != c.want {
			t.Errorf("%s over %s renders %q (%s), want %q", c.topic, c.payload, res.Result, res.Error, c.want)
		}
	}
}

// rendered is what a discovery config's templates render to.
type rendered struct{ value, attributes, command string }

// renderAll renders every template of every config with Jinja2: a value
// template over the last payload of its state topic, an attributes
// template over the last payload of its attributes topic, a command
// template with text. It checks what Home Assistant requires of each
// kind of entity's value, and returns the results.
func renderAll(t *testing.T, configs, payloads map[string]string, text string) map[string]rendered {
	t.Helper()
	type ref struct {
		topic string
		field *string
	}
	var jobs []jinjaJob
	var refs []ref
	out := map[string]*rendered{}
	parsed := map[string]map[string]any{}
	for _, topic := range slices.Sorted(maps.Keys(configs)) {
		var cfg map[string]any
		if err := json.Unmarshal([]byte(configs[topic]), &cfg); err != nil {
			t.Fatalf("%s: %v", topic, err)
		}
		parsed[topic] = cfg
		res := &rendered{}
		out[topic] = res
		add := func(template, topicKey string, field *string) {
			tpl, ok := cfg[template].(string)
			if !ok {
				return
			}
			j := jinjaJob{Template: tpl}
			if topicKey == "" {
				j.Value = &text
			} else {
				src := cfg[topicKey].(string)
				p, ok := payloads[src]
				if !ok || p == "" {
					t.Errorf("%s: nothing on %s to render %s with", topic, src, template)
					return
				}
				j.Payload = &p
			}
			jobs = append(jobs, j)
			refs = append(refs, ref{topic, field})
		}
		add("value_template", "state_topic", &res.value)
		add("json_attributes_template", "json_attributes_topic", &res.attributes)
		add("command_template", "", &res.command)
	}
	results := renderJinja(t, jobs)
	for i, res := range results {
		if res.Error != "" {
			t.Errorf("%s: template %q: %s", refs[i].topic, jobs[i].Template, res.Error)
			continue
		}
		*refs[i].field = res.Result
	}
	final := map[string]rendered{}
	for topic, res := range out {
		final[topic] = *res
		cfg := parsed[topic]
		component := strings.Split(topic, "/")[1]
		if _, ok := cfg["value_template"]; ok {
			checkValue(t, topic, component, cfg, res.value)
		}
		if _, ok := cfg["json_attributes_template"]; ok {
			var m map[string]any
			if err := json.Unmarshal([]byte(res.attributes), &m); err != nil {
				t.Errorf("%s: attributes render %q, not a JSON object: %v", topic, res.attributes, err)
			}
		}
	}
	return final
}

// checkValue checks a rendered value as Home Assistant takes it: a
// binary sensor's is its payload_on or payload_off; a numeric sensor's (a
// unit or a state class) a number; a timestamp's an ISO 8601 time with
// its offset; an enum's one of its options.
func checkValue(t *testing.T, topic, component string, cfg map[string]any, v string) {
	t.Helper()
	switch {
	case component == componentBinarySensor:
		on, off := "ON", "OFF"
		if p, ok := cfg["payload_on"].(string); ok {
			on = p
		}
		if p, ok := cfg["payload_off"].(string); ok {
			off = p
		}
		if v != on && v != off {
			t.Errorf("%s: renders %q, neither %q nor %q", topic, v, on, off)
		}
	case cfg["device_class"] == "timestamp":
		if _, err := time.Parse(time.RFC3339, v); err != nil {
			t.Errorf("%s: renders %q, not a time with an offset: %v", topic, v, err)
		}
	case cfg["device_class"] == "enum":
		if !slices.Contains(cfg["options"].([]any), any(v)) {
			t.Errorf("%s: renders %q, not one of %v", topic, v, cfg["options"])
		}
	case cfg["unit_of_measurement"] != nil || cfg["state_class"] != nil:
		if _, err := strconv.ParseFloat(v, 64); err != nil {
			t.Errorf("%s: renders %q, not a number", topic, v)
		}
	}
}

// jinjaJob is one template for testdata/render.py.
type jinjaJob struct {
	Template string  `json:"template"`
	Payload  *string `json:"payload,omitempty"`
	Value    *string `json:"value,omitempty"`
}

type jinjaResult struct {
	Result string `json:"result"`
	Error  string `json:"error"`
}

// renderJinja renders templates with python3 and Jinja2, the library Home
// Assistant renders them with.
func renderJinja(t *testing.T, jobs []jinjaJob) []jinjaResult {
	t.Helper()
	py := testutil.NeedCommand(t, "python3")
	if out, err := exec.Command(py, "-c", "import jinja2").CombinedOutput(); err != nil {
		t.Fatalf("python3 cannot import jinja2 (%v: %s): install the Debian package python3-jinja2 (bash .ci/test installs everything the tests need)", err, bytes.TrimSpace(out))
	}
	in, err := json.Marshal(jobs)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, filepath.Join("testdata", "render.py"))
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("render.py: %v\n%s", err, &stderr)
	}
	var results []jinjaResult
	if err := json.Unmarshal(out, &results); err != nil || len(results) != len(jobs) {
		t.Fatalf("render.py answered %s (%v)", out, err)
	}
	return results
}

// checkGolden compares a discovery payload with testdata/golden, by topic.
func checkGolden(t *testing.T, topic, payload string) {
	t.Helper()
	path := filepath.Join("testdata", "golden", filepath.FromSlash(strings.TrimSuffix(strings.TrimPrefix(topic, DefaultPrefix+"/"), "/config"))+".json")
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, []byte(payload), "", "  "); err != nil {
		t.Errorf("%s: %v", topic, err)
		return
	}
	pretty.WriteByte('\n')
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, pretty.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	golden, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("%s: no golden file (go test -tags integration ./hass/ -run TestDiscovery -update writes them): %v", topic, err)
		return
	}
	if !bytes.Equal(golden, pretty.Bytes()) {
		t.Errorf("%s differs from %s:\n%s", topic, path, pretty.Bytes())
	}
}

// The node entities' availability follows the radio sides' status: online
// while the radio link is up, offline when it stops, online again when it
// is back; the bridge's link sensor renders likewise.
func TestAvailabilityFollowsStatus(t *testing.T) {
	r := startRig(t, nil)
	w := r.subscribe(t, topics.HassAvailability, topics.StatusFilter, DefaultPrefix+"/#")
	is := func(want string) func(string) bool { return func(p string) bool { return p == want } }
	w.waitLatest(t, topics.HassAvailability, is(topics.HassOnline), "radio link up")
	link := w.waitLatest(t, configTopic(componentBinarySensor, bridgeNode, "link"), nonEmpty, "the link sensor")
	var cfg map[string]any
	json.Unmarshal([]byte(link), &cfg)
	linkRenders := func() string {
		status, _ := w.latest(topics.Status("!5eed0001"))
		res := renderJinja(t, []jinjaJob{{Template: cfg["value_template"].(string), Payload: &status}})
		return res[0].Result + res[0].Error
	}
	if got := linkRenders(); got != "ON" {
		t.Errorf("link renders %q with the radio up", got)
	}

	r.stopRadio()
	w.waitLatest(t, topics.HassAvailability, is(topics.HassOffline), "radio side stopped")
	w.waitLatest(t, topics.Status("!5eed0001"), func(p string) bool { return strings.Contains(p, string(topics.LinkOffline)) }, "status")
	if got := linkRenders(); got != "OFF" {
		t.Errorf("link renders %q with the radio side stopped", got)
	}

	r.startRadioSide(t)
	w.waitLatest(t, topics.HassAvailability, is(topics.HassOnline), "radio side back")
}

// A node not heard for the expiry has every config and its state removed
// with empty retained messages; a client subscribing afterwards finds
// nothing of it. The radio side, still there, stays.
func TestExpire(t *testing.T) {
	r := startRig(t, func(c *Config) { c.Expire = 2 * time.Second })
	w := r.subscribe(t, DefaultPrefix+"/#", "sovereign/hass/#")
	r.anaSpeaks(t)
	w.waitLatest(t, configTopic(componentDeviceTracker, anaNode, "position"), nonEmpty, "Ana's position")
	// The configs go out one by one: wait for them all, not for the first.
	testutil.Eventually(t, wait, func() bool { return len(announcedBy(w, anaNode)) >= 10 }, "only %v announced", announcedBy(w, anaNode))
	announced := announcedBy(w, anaNode)
	testutil.Eventually(t, wait, func() bool {
		cur := w.current(func(string) bool { return true })
		for _, topic := range append(announced, topics.HassNode("!a1b2c3d4")) {
			if cur[topic] != "" {
				return false
			}
		}
		return true
	}, "Ana's entities never removed")

	later := r.subscribe(t, DefaultPrefix+"/+/"+anaNode+"/#", topics.HassNode("!a1b2c3d4"), DefaultPrefix+"/+/"+bridgeNode+"/#")
	for _, m := range later.all() {
		if strings.Contains(m.topic, anaNode) || strings.Contains(m.topic, "a1b2c3d4") {
			t.Errorf("still retained after expiry: %s %s", m.topic, m.payload)
		}
	}
	if !slices.ContainsFunc(later.all(), func(m msg) bool { return strings.Contains(m.topic, bridgeNode) && m.retained }) {
		t.Error("the radio side's entities went too")
	}
}

// announcedBy lists the config topics of a node seen non-empty.
func announcedBy(w *watcher, node string) []string {
	var out []string
	for topic, p := range w.current(isConfig) {
		if strings.Contains(topic, "/"+node+"/") && p != "" {
			out = append(out, topic)
		}
	}
	slices.Sort(out)
	return out
}

// Across a restart of the daemon with the embedded broker, which keeps
// nothing retained: the publisher announces again what it had announced,
// from its state directory, and still removes it once the node has gone
// unheard for the expiry. A client sees exactly what was announced before
// come back and then go.
func TestExpireAfterRestart(t *testing.T) {
	// Long enough for the restart below to come well before Ana expires.
	const expire = 6 * time.Second
	r := startRig(t, func(c *Config) { c.Expire = expire })
	w := r.subscribe(t, DefaultPrefix+"/#")
	r.anaSpeaks(t)
	w.waitLatest(t, configTopic(componentDeviceTracker, anaNode, "position"), nonEmpty, "Ana's position")
	w.waitLatest(t, configTopic(componentSensor, anaNode, "iaq"), nonEmpty, "Ana's IAQ")
	announced := announcedBy(w, anaNode)
	r.stopHass()

	b2, host, port := newBroker(t)
	w2 := subscribe(t, host, port, DefaultPrefix+"/#", "sovereign/hass/#")
	startHass(t, b2, r.hassDir, func(c *Config) { c.Expire = expire })
	// Back at once, from the state directory alone...
	testutil.Eventually(t, wait, func() bool { return slices.Equal(announcedBy(w2, anaNode), announced) },
		"after the restart %v, want %v", announcedBy(w2, anaNode), announced)
	w2.waitLatest(t, topics.HassNode("!a1b2c3d4"), func(p string) bool { return strings.Contains(p, `"iaq":42`) }, "Ana's state")
	// ...and gone once Ana has not been heard for the expiry.
	testutil.Eventually(t, wait, func() bool {
		cur := w2.current(func(string) bool { return true })
		for _, topic := range append(slices.Clone(announced), topics.HassNode("!a1b2c3d4")) {
			if cur[topic] != "" {
				return false
			}
		}
		return true
	}, "Ana's entities never removed after the restart")
}

// When Home Assistant announces its start on its status topic (which a
// local tool may write, and make its will), the publisher publishes
// everything again: a broker that lost its retained messages gets them
// back.
func TestBirthRepublishes(t *testing.T) {
	r := startRig(t, nil)
	w := r.subscribe(t, DefaultPrefix+"/#")
	topic := configTopic(componentSensor, anaNode, "last_heard")
	w.waitLatest(t, topic, nonEmpty, "Ana")
	// The broker forgets it (as a broker restarted without persistence).
	if err := r.broker.Publish(topic, nil, true); err != nil {
		t.Fatal(err)
	}
	w.waitLatest(t, topic, func(p string) bool { return p == "" }, "the broker forgot")

	// Home Assistant logs in with its will on its status topic, as it does
	// by default, and announces its start.
	testutil.NeedCommand(t, "mosquitto_pub")
	ha := testutil.Start(t, "mosquitto_sub", "-h", r.host, "-p", r.port, "-u", "tool", "-P", "tool-pw", "-F", "%t %p",
		"--will-topic", StatusTopic(DefaultPrefix), "--will-payload", "offline", "-t", topic)
	if out, err := exec.Command("mosquitto_pub", "-h", r.host, "-p", r.port, "-u", "tool", "-P", "tool-pw", "-q", "1",
		"-t", StatusTopic(DefaultPrefix), "-m", "online").CombinedOutput(); err != nil {
		t.Fatalf("Home Assistant's birth refused: %v %s", err, out)
	}
	w.waitLatest(t, topic, nonEmpty, "published again after Home Assistant's start")
	ha.WaitFor(t, wait, testutil.Contains(topic+" {"))
}

func testLog() *slog.Logger {
	if os.Getenv("TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
