package xmppgw

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

var testNodes = []nodeName{
	{num: 0xa1b2c3d4, short: "ANA", long: "Ana's T-Beam"},
	{num: 0x0badcafe, short: "MILL", long: "Mill Road Repeater"},
	{num: 0x13572468, short: "KOFI", long: "Kofi"},
	{num: 0x22222222, short: "KH", long: "Kofi Home"},
	{num: 0x33333333, short: "TWIN", long: "Twin"},
	{num: 0x44444444, short: "TW2", long: "Twin"},
	{num: 0x55555555, short: "🐝", long: "Bee Hive"},
}

func TestParseAddress(t *testing.T) {
	tests := []struct {
		body   string
		id     uint32
		name   string
		quoted bool
		text   string
		err    error
	}{
		{body: "@ANA see you at 6", name: "ANA", text: "see you at 6"},
		{body: "  @ana:  see you  ", name: "ana", text: "see you"},
		{body: "@ANA, hi", name: "ANA", text: "hi"},
		{body: "@ANA\nline two", name: "ANA", text: "line two"},
		{body: "@ANA", name: "ANA", text: ""},
		{body: `@"Ana's T-Beam" hi`, name: "Ana's T-Beam", quoted: true, text: "hi"},
		{body: `@“Ana's T-Beam”: hi`, name: "Ana's T-Beam", quoted: true, text: "hi"},
		{body: `@«Bee Hive» hi`, name: "Bee Hive", quoted: true, text: "hi"},
		{body: `@"Ana's T-Beam"hi`, name: "Ana's T-Beam", quoted: true, text: "hi"},
		{body: "@!a1b2c3d4 hi", id: 0xa1b2c3d4, name: "!a1b2c3d4", text: "hi"},
		{body: "@!A1B2C3D4: hi", id: 0xa1b2c3d4, name: "!a1b2c3d4", text: "hi"},
		{body: "@🐝 buzz", name: "🐝", text: "buzz"},
		{body: "hello", err: errNoAddress},
		{body: "", err: errNoAddress},
		{body: "@", err: errNoName},
		{body: "@ hi", err: errNoName},
		{body: "@: hi", err: errNoName},
		{body: `@"" hi`, err: errNoName},
		{body: `@"Ana hi`, err: errOpenQuote},
		{body: "@!a1b2 hi", err: errBadNodeID},
		{body: "@!zzzzzzzz hi", err: errBadNodeID},
		{body: "@!a1b2c3d4e5 hi", err: errBadNodeID},
		{body: "@!ffffffff hello all", err: errBadNodeID}, // broadcast: not one node
		{body: "@!00000000 hi", err: errBadNodeID},
	}
	for _, tt := range tests {
		a, err := parseAddress(tt.body)
		if !errors.Is(err, tt.err) {
			t.Errorf("%q: err = %v, want %v", tt.body, err, tt.err)
			continue
		}
		if err != nil {
			continue
		}
		if a.id != tt.id || a.name != tt.name || a.quoted != tt.quoted || a.text != tt.text {
			t.Errorf("%q: got id %x name %q quoted %v text %q; want %x %q %v %q", tt.body, a.id, a.name, a.quoted, a.text, tt.id, tt.name, tt.quoted, tt.text)
		}
	}
}

func TestResolveAddress(t *testing.T) {
	tests := []struct {
		body       string
		to         uint32 // 0: not resolved
		text       string
		ambiguous  bool
		candidates []string // short names suggested
	}{
		{body: "@ANA see you at 6", to: 0xa1b2c3d4, text: "see you at 6"},
		{body: "@ana see you at 6", to: 0xa1b2c3d4, text: "see you at 6"},
		{body: `@"Ana's T-Beam" hi`, to: 0xa1b2c3d4, text: "hi"},
		{body: `@"ana's t-beam" hi`, to: 0xa1b2c3d4, text: "hi"},
		{body: "@Ana's T-Beam hi there", to: 0xa1b2c3d4, text: "hi there"},
		{body: "@Ana's T-Beam: hi", to: 0xa1b2c3d4, text: "hi"},
		{body: "@Kofi on my way", to: 0x13572468, text: "on my way"},
		{body: "@Kofi Home lights off", to: 0x22222222, text: "lights off"},
		{body: "@KOFI home is far", to: 0x22222222, text: "is far"}, // the longest name that fits, whatever the case
		{body: "@!a1b2c3d4 hi", to: 0xa1b2c3d4, text: "hi"},
		{body: "@!deadbeef hi", to: 0xdeadbeef, text: "hi"}, // unknown ids go to the mesh
		{body: "@🐝 buzz", to: 0x55555555, text: "buzz"},
		{body: "@Bee Hive buzz", to: 0x55555555, text: "buzz"},
		{body: "@Twin hi", ambiguous: true, candidates: []string{"TW2", "TWIN"}},
		{body: `@"Twin" hi`, ambiguous: true, candidates: []string{"TW2", "TWIN"}},
		{body: "@TWIN hi", ambiguous: true, candidates: []string{"TW2", "TWIN"}}, // a long name, whatever the case
		{body: "@TW2 hi", to: 0x44444444, text: "hi"},
		{body: "@ZED hi", candidates: nil},
		{body: "@Mill hi", to: 0x0badcafe, text: "hi"},
		{body: "@Road hi", candidates: []string{"MILL"}}, // not a name, but part of one
		{body: "@Ana's hi", candidates: []string{"ANA"}},
		{body: "@Ana's T-Beamer hi", candidates: []string{"ANA"}},
	}
	for _, tt := range tests {
		a, err := parseAddress(tt.body)
		if err != nil {
			t.Errorf("%q: %v", tt.body, err)
			continue
		}
		res := resolveAddress(a, testNodes)
		if tt.to != 0 {
			if !res.ok || res.to.num != tt.to || res.text != tt.text {
				t.Errorf("%q: got ok %v to %x text %q; want %x %q", tt.body, res.ok, res.to.num, res.text, tt.to, tt.text)
			}
			continue
		}
		var got []string
		for _, c := range res.candidates {
			got = append(got, c.short)
		}
		if res.ok || res.ambiguous != tt.ambiguous || strings.Join(got, ",") != strings.Join(tt.candidates, ",") {
			t.Errorf("%q: got ok %v ambiguous %v candidates %q; want ambiguous %v candidates %q", tt.body, res.ok, res.ambiguous, got, tt.ambiguous, tt.candidates)
		}
	}
}

// The answers to a message that cannot be addressed say what to write.
func TestAddressHelp(t *testing.T) {
	ambiguous := addressHelp(nil, testNodes[4:6], "Twin", true)
	if !strings.Contains(ambiguous, "more than one node") || !strings.Contains(ambiguous, "@!33333333 — TWIN (Twin, !33333333)") {
		t.Errorf("ambiguous: %q", ambiguous)
	}
	unknown := addressHelp(nil, testNodes[:1], "Anna", false)
	if !strings.Contains(unknown, "no node called “Anna”") || !strings.Contains(unknown, "Did you mean") || !strings.Contains(unknown, "ANA (Ana's T-Beam, !a1b2c3d4)") {
		t.Errorf("unknown: %q", unknown)
	}
	form := addressHelp(errNoAddress, nil, "", false)
	if !strings.Contains(form, "@ANA see you at 6") || !strings.Contains(form, "!nodes") {
		t.Errorf("no address: %q", form)
	}
}

// Whatever is written, the parser does not panic, and what it reads as the
// message is the end of what was written; a resolved address keeps that.
func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{"@ANA see you at 6", `@"Ana's T-Beam" hi`, "@!a1b2c3d4 hi", "@Kofi Home x", `@“x`, "@", "@!", "@\xff\xfe hi", "@Ana's T-Beam: hi"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		a, err := parseAddress(body)
		if err != nil {
			return
		}
		trimmed := strings.TrimSpace(body)
		if !strings.HasSuffix(trimmed, a.text) || a.name == "" {
			t.Fatalf("%q: text %q is not the end of the message, or name %q empty", body, a.text, a.name)
		}
		if a.id != 0 && !strings.HasPrefix(a.name, "!") {
			t.Fatalf("%q: id %x with name %q", body, a.id, a.name)
		}
		res := resolveAddress(a, testNodes)
		if res.ok && !strings.HasSuffix(trimmed, res.text) {
			t.Fatalf("%q: resolved text %q is not the end of the message", body, res.text)
		}
		if len(res.candidates) > maxCandidates || (res.ok && len(res.candidates) > 0) {
			t.Fatalf("%q: %d candidates, ok %v", body, len(res.candidates), res.ok)
		}
		if utf8.ValidString(body) && !utf8.ValidString(res.text) {
			t.Fatalf("%q: text %q is not valid UTF-8", body, res.text)
		}
	})
}

func TestPackLines(t *testing.T) {
	items := []string{"Heard in 1h (3):", "ANA 3m", "MILL 10m", "KOFI 1h"}
	if got := packLines(items, 200, 2); len(got) != 1 || got[0] != "Heard in 1h (3): ANA 3m, MILL 10m, KOFI 1h" {
		t.Errorf("one packet: %q", got)
	}
	who := []string{"village (2):", "alice", "bob", "farm (1):", "carol"}
	if got := packLines(who, 200, 2); len(got) != 1 || got[0] != "village (2): alice, bob\nfarm (1): carol" {
		t.Errorf("two rooms: %q", got)
	}
	var many []string
	for range 100 {
		many = append(many, "NODE 59m")
	}
	got := packLines(append([]string{"Heard in 1h (100):"}, many...), 50, 2)
	if len(got) != 2 || !strings.HasSuffix(got[1], " more") && !strings.Contains(got[1], " +") {
		t.Errorf("too many: %q", got)
	}
	for _, g := range got {
		if len(g) > 50 || !utf8.ValidString(g) {
			t.Errorf("packet %q: %d bytes", g, len(g))
		}
	}
}
