package hass

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

const xmppJID = "bridge@example.org"

func xmppRecord(t *testing.T, state topics.LinkState, rooms int) []byte {
	t.Helper()
	b, err := topics.XMPPStatusRecord{State: state, JID: xmppJID, Since: "2026-11-25T20:00:00Z", Rooms: rooms}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// An XMPP side is a device of its own, announced once its status record
// arrives, with no radio side's device above it; a record that does not
// follow the contract, or names another account than its topic, announces
// nothing; the device goes when its record is removed.
func TestXMPPSide(t *testing.T) {
	s, bus, _ := testState(t, nil)
	node := xmppDeviceID(xmppJID)
	if node != "sovereign_xmpp_bridge_example_org_5d0803ae" || !topicLevel.MatchString(node) {
		t.Errorf("device id %q", node)
	}
	if a, b := xmppDeviceID("a.b@example.org"), xmppDeviceID("a_b@example.org"); a == b || !topicLevel.MatchString(xmppDeviceID("ünï cödé+#/@x")) {
		t.Errorf("device ids %q %q alike", a, b)
	}
	for _, p := range []string{`{"state":"online"}`, `not json`, strings.Replace(string(xmppRecord(t, topics.LinkOnline, 1)), xmppJID, "other@example.org", 1)} {
		s.onXMPPStatus(topics.XMPPStatus(xmppJID), []byte(p))
	}
	s.onXMPPStatus("sovereign/bridge/xmpp/a+b@example.org", xmppRecord(t, topics.LinkOnline, 1))
	if got := bus.configs(DefaultPrefix); len(got) != 0 {
		t.Fatalf("announced from records that do not follow the contract: %v", got)
	}

	s.onXMPPStatus(topics.XMPPStatus(xmppJID), xmppRecord(t, topics.LinkOnline, 1))
	if got, want := keysOf(t, bus, node), []string{"binary_sensor/connected", "sensor/rooms", "sensor/since"}; !slices.Equal(got, want) {
		t.Errorf("XMPP entities %v, want %v", got, want)
	}
	for _, topic := range bus.configs(DefaultPrefix) {
		var cfg map[string]any
		if err := json.Unmarshal(bus.retained[topic], &cfg); err != nil {
			t.Fatal(err)
		}
		dev := cfg["device"].(map[string]any)
		if _, ok := dev["via_device"]; ok || dev["name"] != "SovereignRelay XMPP "+xmppJID || cfg["state_topic"] != topics.XMPPStatus(xmppJID) {
			t.Errorf("%s: %s", topic, bus.retained[topic])
		}
	}
	// Going offline changes no config: the entities read the record.
	n := len(bus.log)
	s.onXMPPStatus(topics.XMPPStatus(xmppJID), xmppRecord(t, topics.LinkOffline, 0))
	if len(bus.log) != n {
		t.Errorf("published %v for a state change", bus.log[n:])
	}
	if string(bus.retained[topics.HassAvailability]) != topics.HassOffline {
		t.Errorf("an XMPP side made the node entities available: %q", bus.retained[topics.HassAvailability])
	}

	s.onXMPPStatus(topics.XMPPStatus(xmppJID), nil)
	if got := bus.configs(DefaultPrefix); len(got) != 0 {
		t.Errorf("still announced after its record was removed: %v", got)
	}
}

// What was announced for an XMPP side is kept across a restart: announced
// again at once, and removed when its record has not come back within the
// expiry.
func TestXMPPSideRestart(t *testing.T) {
	s, bus, clk := testState(t, nil)
	s.onXMPPStatus(topics.XMPPStatus(xmppJID), xmppRecord(t, topics.LinkOnline, 2))
	s.stop()
	announced := bus.configs(DefaultPrefix)
	if len(announced) != 3 {
		t.Fatalf("announced %v", announced)
	}

	s2, bus2, clk2 := testState(t, func(c *Config) { c.StateDir = s.cfg.StateDir })
	clk2.now = clk.now.Add(time.Minute)
	s2.started = clk2.now
	s2.load()
	s2.restore()
	if got := bus2.configs(DefaultPrefix); !slices.Equal(got, announced) {
		t.Errorf("after a restart %v, want %v", got, announced)
	}
	clk2.now = clk2.now.Add(s2.cfg.Expire + time.Minute)
	s2.sweep()
	if got := bus2.configs(DefaultPrefix); len(got) != 0 {
		t.Errorf("an XMPP side not back within the expiry still announced: %v", got)
	}
}
