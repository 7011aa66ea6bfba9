package topics

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// The results topic is the bridge's own (no network client may write it)
// and outside the downlink's filter (the bridge never takes a result for a
// request).
func TestJSONResultTopic(t *testing.T) {
	if JSONResult != "sovereign/json/result" || !IsBridgeTopic(JSONResult) {
		t.Errorf("JSONResult = %q, bridge topic %v", JSONResult, IsBridgeTopic(JSONResult))
	}
	if IsJSONDownlink(JSONResult) {
		t.Error("the results topic is a downlink topic")
	}
	if got := JSONDownlink("msh/EU_868"); got != "msh/EU_868/2/json/mqtt/" || !IsJSONDownlink(got) {
		t.Errorf("JSONDownlink = %q", got)
	}
	if got := JSONFilter("msh/EU_868", "+"); got != "msh/EU_868/2/json/+/+" {
		t.Errorf("JSONFilter = %q", got)
	}
}

// Each status reads as documented, and survives encoding and parsing; the
// client's id comes back byte for byte.
func TestDownlinkResultRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		res  DownlinkResult
		want string
	}{
		{DownlinkResult{ID: json.RawMessage(`"nr-42"`), RequestID: 7, Status: DownlinkQueued, Gateway: "!5eed0001", PacketID: 99},
			`{"id":"nr-42","request_id":7,"status":"queued","gateway":"!5eed0001","packet_id":99}`},
		{DownlinkResult{ID: json.RawMessage(`1.50e3`), RequestID: 7, Status: DownlinkSent, Gateway: "!5eed0001", PacketID: 99},
			`{"id":1.50e3,"request_id":7,"status":"sent","gateway":"!5eed0001","packet_id":99}`},
		{DownlinkResult{RequestID: 8, Status: DownlinkAcked, PacketID: 100},
			`{"request_id":8,"status":"acked","packet_id":100}`},
		{DownlinkResult{ID: json.RawMessage(`"a \"quoted\" <id>"`), RequestID: 9, Status: DownlinkRefused, Reason: "BAD_REQUEST", Detail: `json downlink: unknown "type" "reboot"`},
			`{"id":"a \"quoted\" <id>","request_id":9,"status":"refused","reason":"BAD_REQUEST","detail":"json downlink: unknown \"type\" \"reboot\""}`},
		{DownlinkResult{ID: json.RawMessage(`-3`), RequestID: 10, Status: DownlinkFailed, Reason: "MAX_RETRANSMIT", Detail: "no ack", PacketID: 5},
			`{"id":-3,"request_id":10,"status":"failed","reason":"MAX_RETRANSMIT","detail":"no ack","packet_id":5}`},
	} {
		b, err := tc.res.Marshal()
		if err != nil || string(b) != tc.want {
			t.Errorf("%+v encodes as\n%s (%v), want\n%s", tc.res, b, err, tc.want)
			continue
		}
		back, err := ParseDownlinkResult(b)
		if err != nil || !reflect.DeepEqual(back, tc.res) {
			t.Errorf("%s parses as %+v (%v), want %+v", b, back, err, tc.res)
		}
	}
	for s, terminal := range map[DownlinkStatus]bool{DownlinkQueued: false, DownlinkSent: true, DownlinkAcked: true, DownlinkRefused: true, DownlinkFailed: true} {
		if s.Terminal() != terminal {
			t.Errorf("%q terminal = %v", s, s.Terminal())
		}
	}
}

func TestParseDownlinkResultRejects(t *testing.T) {
	for _, in := range []string{
		``, `[]`, `{}`, `{"request_id":1}`,
		`{"request_id":1,"status":"delivered"}`,
		`{"status":"sent"}`,
		`{"request_id":1,"status":"refused"}`,
		`{"request_id":1,"status":"sent","reason":"NONE"}`,
		`{"request_id":1,"status":"sent","id":{"a":1}}`,
		`{"request_id":1,"status":"sent","id":true}`,
		`{"request_id":1,"status":"sent","id":"` + strings.Repeat("x", MaxDownlinkIDBytes) + `"}`,
		`{"request_id":-1,"status":"sent"}`,
	} {
		if r, err := ParseDownlinkResult([]byte(in)); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseDownlinkResult(%s) = %+v, %v; want ErrMalformed", in, r, err)
		}
	}
	// Fields it does not know are ignored.
	if _, err := ParseDownlinkResult([]byte(`{"request_id":1,"status":"sent","later":true}`)); err != nil {
		t.Errorf("an unknown field: %v", err)
	}
}

// The client's id: any JSON string or number, verbatim, at most
// MaxDownlinkIDBytes as written, taken as far as the message is valid;
// anything else is an error, and a message that is no JSON object has none.
func TestDownlinkID(t *testing.T) {
	long := `"` + strings.Repeat("é", (MaxDownlinkIDBytes-2)/2) + `"`
	for _, tc := range []struct {
		in, want string
		bad      bool
	}{
		{`{"type":"sendtext","payload":"hi","id":"nr-1"}`, `"nr-1"`, false},
		{`{"id": 42 ,"type":"sendtext"}`, `42`, false},
		{`{"id":-1.5e-3}`, `-1.5e-3`, false},
		{`{"id":"caf\u00e9 \"x\""}`, `"caf\u00e9 \"x\""`, false},
		{`{"id":` + long + `}`, long, false},
		{`{"type":"sendtext","payload":"no id"}`, ``, false},
		{`{"type":"sendtext","payload":`, ``, false},
		{`{"id":"cut short","type":"sendtext","payload":`, `"cut short"`, false},
		{`{"type":"sendposition","payload":{"id":"nested"}}`, ``, false},
		{`{"id":"first","id":7}`, `7`, false},
		{`"just a string"`, ``, false},
		{`{"id":null}`, ``, true},
		{`{"id":true}`, ``, true},
		{`{"id":{"a":1}}`, ``, true},
		{`{"id":[1]}`, ``, true},
		{`{"id":"` + strings.Repeat("x", MaxDownlinkIDBytes-1) + `"}`, ``, true},
		{`{"id":` + strings.Repeat("9", MaxDownlinkIDBytes+1) + `}`, ``, true},
	} {
		got, err := DownlinkID([]byte(tc.in))
		if tc.bad {
			if !errors.Is(err, ErrDownlinkID) || got != nil {
				t.Errorf("DownlinkID(%s) = %s, %v; want ErrDownlinkID", tc.in, got, err)
			}
			continue
		}
		if err != nil || string(got) != tc.want {
			t.Errorf("DownlinkID(%s) = %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

// Whatever arrives on the results topic, ParseDownlinkResult returns a
// result that keeps the contract, or ErrMalformed; a result it accepts
// encodes and parses back to itself.
func FuzzParseDownlinkResult(f *testing.F) {
	for _, s := range []string{
		`{"id":"nr-42","request_id":7,"status":"queued","gateway":"!5eed0001","packet_id":99}`,
		`{"request_id":9,"status":"refused","reason":"BAD_REQUEST","detail":"x"}`,
		`{"id":1e3,"request_id":10,"status":"failed","reason":"MAX_RETRANSMIT"}`,
		`{"request_id":1,"status":"acked","id":[1]}`,
		`{"request_id":1,"status":"sent","id":"\ud800"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseDownlinkResult(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		if !r.Status.valid() || r.RequestID == 0 || ((r.Status == DownlinkRefused || r.Status == DownlinkFailed) != (r.Reason != "")) {
			t.Fatalf("accepted %+v", r)
		}
		if r.ID != nil && (len(r.ID) > MaxDownlinkIDBytes || !json.Valid(r.ID)) {
			t.Fatalf("accepted the id %q", r.ID)
		}
		out, err := r.Marshal()
		if err != nil {
			t.Fatalf("cannot encode %+v: %v", r, err)
		}
		back, err := ParseDownlinkResult(out)
		if err != nil {
			t.Fatalf("%s does not parse back: %v", out, err)
		}
		if !bytes.Equal(back.ID, r.ID) || back.RequestID != r.RequestID || back.Status != r.Status || back.PacketID != r.PacketID || back.Gateway != r.Gateway {
			t.Fatalf("%+v came back as %+v", r, back)
		}
	})
}

// Whatever a client sends, DownlinkID returns nothing, an error, or an id
// that a result can carry.
func FuzzDownlinkID(f *testing.F) {
	for _, s := range []string{`{"id":"nr-1"}`, `{"id":42}`, `{"id":[1]}`, `{"id":"\xff"}`, `{"type":"sendtext"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := DownlinkID(b)
		if err != nil || id == nil {
			return
		}
		out, err := DownlinkResult{ID: id, RequestID: 1, Status: DownlinkQueued}.Marshal()
		if err != nil {
			t.Fatalf("the id %q cannot be encoded: %v", id, err)
		}
		back, err := ParseDownlinkResult(out)
		if err != nil || !bytes.Equal(back.ID, id) {
			t.Fatalf("the id %q came back as %q (%v)", id, back.ID, err)
		}
	})
}
