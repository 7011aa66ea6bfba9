package topics

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// strictly decodes b as T refusing fields T does not have, and checks that
// T encodes it back byte for byte: what one side publishes is what the
// other reads, nothing more and nothing less.
func strictly[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Errorf("%s does not decode as %T: %v", b, v, err)
	}
	if again, err := json.Marshal(v); err != nil || !bytes.Equal(again, b) {
		t.Errorf("%s does not round-trip through %T: %s (%v)", b, v, again, err)
	}
	return v
}

// The radio side's status carries its queue and airtime, as the README
// shows it, and reads as before when they are 0.
func TestStatusRecordLoad(t *testing.T) {
	rec := StatusRecord{State: LinkOnline, Device: "tcp://127.0.0.1:36739", Since: "2026-11-25T20:38:31Z", Node: "!5eed0001",
		QueueDepth: 3, AirtimeUsed: 12.345, AirtimeBudget: 180}
	want := `{"state":"online","device":"tcp://127.0.0.1:36739","since":"2026-11-25T20:38:31Z","node":"!5eed0001",` +
		`"queue_depth":3,"airtime_used_seconds":12.345,"airtime_budget_seconds":180}`
	b, err := json.Marshal(rec)
	if err != nil || string(b) != want {
		t.Errorf("status encodes as\n%s (%v), want\n%s", b, err, want)
	}
	if back := strictly[StatusRecord](t, b); back != rec {
		t.Errorf("status back as %+v, want %+v", back, rec)
	}
	// The README's example: what the demo's radio side says once online.
	rec.QueueDepth, rec.AirtimeUsed = 0, 0
	readme := `{"state":"online","device":"tcp://127.0.0.1:36739","since":"2026-11-25T20:38:31Z","node":"!5eed0001","airtime_budget_seconds":180}`
	if b, _ := json.Marshal(rec); string(b) != readme {
		t.Errorf("status encodes as %s, want the README's %s", b, readme)
	}
	rec.AirtimeBudget = 0
	old := `{"state":"online","device":"tcp://127.0.0.1:36739","since":"2026-11-25T20:38:31Z","node":"!5eed0001"}`
	if b, _ := json.Marshal(rec); string(b) != old {
		t.Errorf("status without queue or airtime encodes as %s, want %s as before", b, old)
	}
	if back := strictly[StatusRecord](t, []byte(old)); back != rec {
		t.Errorf("an older status reads as %+v", back)
	}
}

func TestXMPPStatusTopics(t *testing.T) {
	if got := XMPPStatus("bridge@example.org"); got != "sovereign/bridge/xmpp/bridge@example.org" || !IsBridgeTopic(got) {
		t.Errorf("XMPPStatus = %q", got)
	}
	if XMPPStatusFilter != "sovereign/bridge/xmpp/+" {
		t.Errorf("XMPPStatusFilter = %q", XMPPStatusFilter)
	}
	for topic, want := range map[string]string{
		"sovereign/bridge/xmpp/bridge@example.org":   "bridge@example.org",
		"sovereign/bridge/xmpp/":                     "",
		"sovereign/bridge/xmpp/bridge@example.org/r": "",
		"sovereign/bridge/status/!5eed0001":          "",
		"sovereign/bridge/xmpp/a+b@example.org":      "",
	} {
		if got, ok := XMPPStatusJID(topic); ok != (want != "") || (ok && got != want) {
			t.Errorf("XMPPStatusJID(%q) = %q, %v; want %q", topic, got, ok, want)
		}
	}
	for jid, ok := range map[string]bool{
		"bridge@example.org": true, "example.org": true, "brücke@example.org": true,
		"": false, "bridge@example.org/res": false, "a+b@example.org": false, "a#b@example.org": false, "a\x00@example.org": false,
	} {
		if err := ValidXMPPJID(jid); (err == nil) != ok || (err != nil && !errors.Is(err, ErrMalformed)) {
			t.Errorf("ValidXMPPJID(%q) = %v", jid, err)
		}
	}
}

// The XMPP side's record reads as the README shows it, survives the broker
// strictly, and what does not follow the contract is neither published nor
// read.
func TestXMPPStatusRecord(t *testing.T) {
	rec := XMPPStatusRecord{State: LinkOnline, JID: "bridge@example.org", Since: "2026-11-25T20:38:31Z", Rooms: 1}
	b, err := rec.Marshal()
	if want := `{"state":"online","jid":"bridge@example.org","since":"2026-11-25T20:38:31Z","rooms":1}`; err != nil || string(b) != want {
		t.Errorf("record encodes as\n%s (%v), want\n%s", b, err, want)
	}
	if back := strictly[XMPPStatusRecord](t, b); back != rec {
		t.Errorf("record back as %+v", back)
	}
	if back, err := ParseXMPPStatus(b); err != nil || back != rec {
		t.Errorf("ParseXMPPStatus = %+v, %v", back, err)
	}
	off := XMPPStatusRecord{State: LinkOffline, JID: "bridge@example.org", Since: "2026-11-25T21:00:00Z"}
	if b, err := off.Marshal(); err != nil || string(b) != `{"state":"offline","jid":"bridge@example.org","since":"2026-11-25T21:00:00Z","rooms":0}` {
		t.Errorf("offline record encodes as %s (%v)", b, err)
	}
	// A field added later is ignored by this reader.
	if back, err := ParseXMPPStatus([]byte(`{"state":"online","jid":"bridge@example.org","since":"2026-11-25T20:38:31Z","rooms":1,"later":true}`)); err != nil || back != rec {
		t.Errorf("a record with a later field reads as %+v, %v", back, err)
	}
	bad := map[string]XMPPStatusRecord{
		"no state":         {JID: "bridge@example.org", Since: rec.Since},
		"connecting":       {State: LinkConnecting, JID: "bridge@example.org", Since: rec.Since},
		"no jid":           {State: LinkOnline, Since: rec.Since},
		"a full jid":       {State: LinkOnline, JID: "bridge@example.org/res", Since: rec.Since},
		"a wildcard":       {State: LinkOnline, JID: "a+b@example.org", Since: rec.Since},
		"no since":         {State: LinkOnline, JID: "bridge@example.org"},
		"since not a time": {State: LinkOnline, JID: "bridge@example.org", Since: "yesterday"},
		"negative rooms":   {State: LinkOnline, JID: "bridge@example.org", Since: rec.Since, Rooms: -1},
	}
	for what, r := range bad {
		if b, err := r.Marshal(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: encoded as %s (%v)", what, b, err)
		}
		raw, _ := json.Marshal(r)
		if got, err := ParseXMPPStatus(raw); !errors.Is(err, ErrMalformed) || !reflect.DeepEqual(got, XMPPStatusRecord{}) {
			t.Errorf("%s: %s read as %+v (%v)", what, raw, got, err)
		}
	}
	for _, raw := range []string{``, `[]`, `{"state":1}`, `{"rooms":"1"}`} {
		if _, err := ParseXMPPStatus([]byte(raw)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q read (%v)", raw, err)
		}
	}
}
