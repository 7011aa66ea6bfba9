package topics

import (
	"errors"
	"testing"
)

func TestRoot(t *testing.T) {
	tests := []struct{ override, region, want string }{
		{"", "EU_868", "msh/EU_868"},
		{"", "US", "msh/US"},
		{"", "", "msh"},
		{"", "UNSET", "msh"},
		{"village/mesh", "US", "village/mesh"},
		{"village/mesh/", "US", "village/mesh"},
	}
	for _, tt := range tests {
		if got := Root(tt.override, tt.region); got != tt.want {
			t.Errorf("Root(%q, %q) = %q, want %q", tt.override, tt.region, got, tt.want)
		}
	}
}

func TestBuildAndParse(t *testing.T) {
	tests := []struct {
		topic string
		want  Topic
	}{
		{Envelope("msh/EU_868", "LongFast", "!a1b2c3d4"), Topic{"msh/EU_868", KindEnvelope, "LongFast", "!a1b2c3d4"}},
		{JSON("msh/US", "village", "!00000001"), Topic{"msh/US", KindJSON, "village", "!00000001"}},
		{"msh/US/2/json/mqtt/", Topic{"msh/US", KindJSON, "mqtt", ""}},
		{"a/b/c/2/e/PKI/!deadbeef", Topic{"a/b/c", KindEnvelope, PKIChannel, "!deadbeef"}},
		// A root that itself contains "2" and "e" segments is matched from the right.
		{"2/e/2/e/LongFast/!0000abcd", Topic{"2/e", KindEnvelope, "LongFast", "!0000abcd"}},
		{Map("msh/EU_868"), Topic{Root: "msh/EU_868", Kind: KindMap}},
	}
	for _, tt := range tests {
		got, err := Parse(tt.topic)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.topic, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Parse(%q) = %+v, want %+v", tt.topic, got, tt.want)
		}
	}
}

func TestParseRejects(t *testing.T) {
	for _, topic := range []string{
		"", "msh", "msh/US", "msh/US/2/e/LongFast/", "msh/US/2/x/LongFast/!1",
		"/2/e/LongFast/!1", "msh/US/2/e//!1", "sovereign/mesh/rx", "msh/US/2/stat/!1",
	} {
		if _, err := Parse(topic); !errors.Is(err, ErrNotMeshtastic) {
			t.Errorf("Parse(%q) err = %v, want ErrNotMeshtastic", topic, err)
		}
	}
}

func TestDownlink(t *testing.T) {
	tp, err := Parse("msh/EU_868/2/json/mqtt/")
	if err != nil || !tp.IsJSONDownlink() {
		t.Fatalf("downlink topic not recognised: %+v %v", tp, err)
	}
	if got := JSONDownlinkFilter("msh/EU_868"); got != "msh/EU_868/2/json/mqtt/#" {
		t.Errorf("JSONDownlinkFilter = %q", got)
	}
	if got := EnvelopeFilter("msh/US", "LongFast"); got != "msh/US/2/e/LongFast/+" {
		t.Errorf("EnvelopeFilter = %q", got)
	}
}

func TestNodeTopic(t *testing.T) {
	id, ok := NodeID(Node("!a1b2c3d4"))
	if !ok || id != "!a1b2c3d4" {
		t.Fatalf("NodeID(Node(x)) = %q, %v", id, ok)
	}
	for _, bad := range []string{"sovereign/mesh/nodes/", "sovereign/mesh/nodes/a/b", "msh/US"} {
		if _, ok := NodeID(bad); ok {
			t.Errorf("NodeID(%q) accepted", bad)
		}
	}
}

// The records of a radio side end in its gateway id, and each topic gives
// the id back; a topic of another family, or with more segments, does not.
func TestGatewayTopics(t *testing.T) {
	for _, tc := range []struct {
		topic string
		parse func(string) (string, bool)
		want  string
	}{
		{Status("!a1b2c3d4"), StatusGateway, "sovereign/bridge/status/!a1b2c3d4"},
		{Radio("!a1b2c3d4"), RadioGateway, "sovereign/bridge/radio/!a1b2c3d4"},
	} {
		if tc.topic != tc.want {
			t.Errorf("topic %q, want %q", tc.topic, tc.want)
		}
		if id, ok := tc.parse(tc.topic); !ok || id != "!a1b2c3d4" {
			t.Errorf("gateway of %q = %q, %v", tc.topic, id, ok)
		}
	}
	for _, bad := range []string{"sovereign/bridge/status/", "sovereign/bridge/status/a/b", "sovereign/bridge/radio/!a1b2c3d4", "sovereign/bridge/status"} {
		if _, ok := StatusGateway(bad); ok {
			t.Errorf("StatusGateway(%q) accepted", bad)
		}
	}
	if got := MeshTXTo("!a1b2c3d4"); got != "sovereign/mesh/tx/!a1b2c3d4" || !IsBridgeTopic(got) {
		t.Errorf("MeshTXTo = %q", got)
	}
}
