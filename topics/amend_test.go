package topics

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
)

// A result from a radio side older than PacketID reads as it did, with
// no packet id; one with it keeps every older field where it was, so an
// older reader gets the same result.
func TestResultPacketIDCompatible(t *testing.T) {
	routing, _ := proto.Marshal(&meshpb.Routing{Variant: &meshpb.Routing_ErrorReason{ErrorReason: meshpb.Routing_NONE}})
	old, _ := proto.Marshal(&meshpb.ServiceEnvelope{GatewayId: OriginXMPP, Packet: &meshpb.MeshPacket{
		From: 7, To: 7, Channel: 2,
		PayloadVariant: &meshpb.MeshPacket_Decoded{Decoded: &meshpb.Data{Portnum: meshpb.PortNum_ROUTING_APP, Payload: routing, RequestId: 42}},
	}})
	got, err := ParseResult(old)
	if want := (Result{Origin: OriginXMPP, RequestID: 42, Radio: 7, Channel: 2}); err != nil || got != want {
		t.Errorf("an older result parsed as %+v (%v), want %+v", got, err, want)
	}
	withID := got
	withID.PacketID = 0xcafe
	b, err := withID.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var env meshpb.ServiceEnvelope
	if err := proto.Unmarshal(b, &env); err != nil {
		t.Fatal(err)
	}
	env.Packet.Id = 0 // what an older reader, which knows no packet id, sees
	again, _ := proto.Marshal(&env)
	if got, err := ParseResult(again); err != nil || got != (Result{Origin: OriginXMPP, RequestID: 42, Radio: 7, Channel: 2}) {
		t.Errorf("without its packet id the result reads %+v (%v)", got, err)
	}
}

func TestAmend(t *testing.T) {
	text := &meshpb.Data{Portnum: meshpb.PortNum_TEXT_MESSAGE_APP, Payload: []byte("alice: fixed"), ReplyId: 9}
	for _, a := range []Amend{
		{Origin: OriginXMPP, ID: 1, Target: 2, Action: AmendCancel},
		{Origin: OriginXMPP, ID: 3, Target: 4, Action: AmendReplace, Data: text},
	} {
		b, err := a.Marshal()
		if err != nil {
			t.Fatalf("%+v: %v", a, err)
		}
		back, err := ParseAmend(b)
		if err != nil || back.Origin != a.Origin || back.ID != a.ID || back.Target != a.Target || back.Action != a.Action || !proto.Equal(back.Data, a.Data) {
			t.Errorf("%s came back as %+v (%v)", b, back, err)
		}
	}
	if b, _ := (Amend{Origin: OriginXMPP, ID: 1, Target: 2, Action: AmendCancel}).Marshal(); string(b) != `{"origin":"xmpp","id":1,"target":2,"action":"cancel"}` {
		t.Errorf("a cancel reads %s", b)
	}

	for _, tc := range []struct{ name, in string }{
		{"not JSON", `{`},
		{"no origin", `{"id":1,"target":2,"action":"cancel"}`},
		{"no id", `{"origin":"xmpp","target":2,"action":"cancel"}`},
		{"no target", `{"origin":"xmpp","id":1,"action":"cancel"}`},
		{"unknown action", `{"origin":"xmpp","id":1,"target":2,"action":"delete"}`},
		{"replace without data", `{"origin":"xmpp","id":1,"target":2,"action":"replace"}`},
		{"cancel with data", `{"origin":"xmpp","id":1,"target":2,"action":"cancel","data":"CAE="}`},
		{"data not base64", `{"origin":"xmpp","id":1,"target":2,"action":"replace","data":"!!"}`},
		{"data not a Data", `{"origin":"xmpp","id":1,"target":2,"action":"replace","data":"/w=="}`},
	} {
		if _, err := ParseAmend([]byte(tc.in)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %s parsed (%v)", tc.name, tc.in, err)
		}
	}
	if _, err := (Amend{Origin: OriginXMPP, ID: 1, Target: 2, Action: AmendReplace}).Marshal(); err == nil {
		t.Error("a replace without data encoded")
	}
}

func TestAmendResult(t *testing.T) {
	for _, tc := range []struct {
		r    AmendResult
		want string
	}{
		{AmendResult{Origin: OriginXMPP, ID: 1, Target: 2, Outcome: AmendApplied, Gateway: "!5eed0001", PacketID: 77},
			`{"origin":"xmpp","id":1,"target":2,"outcome":"applied","gateway":"!5eed0001","packet_id":77}`},
		{AmendResult{Origin: OriginXMPP, ID: 1, Target: 2, Outcome: AmendNotWaiting},
			`{"origin":"xmpp","id":1,"target":2,"outcome":"not_waiting"}`},
		{AmendResult{Origin: OriginXMPP, ID: 1, Target: 2, Outcome: AmendRefused, Reason: "TOO_LARGE"},
			`{"origin":"xmpp","id":1,"target":2,"outcome":"refused","reason":"TOO_LARGE"}`},
	} {
		b, err := tc.r.Marshal()
		if err != nil || string(b) != tc.want {
			t.Errorf("%+v encodes as %s (%v), want %s", tc.r, b, err, tc.want)
		}
		if back, err := ParseAmendResult(b); err != nil || back != tc.r {
			t.Errorf("%s came back as %+v (%v)", b, back, err)
		}
	}
	for _, in := range []string{
		`[]`,
		`{"origin":"xmpp","target":2,"outcome":"applied"}`,
		`{"origin":"xmpp","id":1,"target":2,"outcome":"gone"}`,
		`{"origin":"xmpp","id":1,"target":2,"outcome":"refused"}`,
		`{"origin":"xmpp","id":1,"target":2,"outcome":"applied","reason":"TOO_LARGE"}`,
	} {
		if _, err := ParseAmendResult([]byte(in)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s parsed (%v)", in, err)
		}
	}
}

// The amend topics are the bridge's own, and each radio side's amends
// are its own topic.
func TestAmendTopics(t *testing.T) {
	if got := MeshAmendTo("!5eed0001"); got != "sovereign/mesh/amend/!5eed0001" || !IsBridgeTopic(got) {
		t.Errorf("MeshAmendTo = %q", got)
	}
	if !IsBridgeTopic(MeshAmendResult) || strings.HasPrefix(MeshAmendResult, amendPrefix) {
		t.Errorf("MeshAmendResult = %q", MeshAmendResult)
	}
}

// Whatever arrives on an amend topic, ParseAmend returns an amend that
// keeps the contract, or ErrMalformed; one it accepts encodes and parses
// back to itself.
func FuzzParseAmend(f *testing.F) {
	for _, s := range []string{
		`{"origin":"xmpp","id":1,"target":2,"action":"cancel"}`,
		`{"origin":"xmpp","id":3,"target":4,"action":"replace","data":"CAESDGFsaWNlOiBmaXhlZA=="}`,
		`{"origin":"xmpp","id":3,"target":4,"action":"replace","data":""}`,
		`{"origin":"","id":3,"target":4,"action":"replace","data":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseAmend(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		if a.Origin == "" || a.ID == 0 || a.Target == 0 || (a.Action == AmendReplace) != (a.Data != nil) {
			t.Fatalf("accepted %+v", a)
		}
		out, err := a.Marshal()
		if err != nil {
			t.Fatalf("cannot encode %+v: %v", a, err)
		}
		back, err := ParseAmend(out)
		if err != nil || back.Origin != a.Origin || back.ID != a.ID || back.Target != a.Target || back.Action != a.Action || !proto.Equal(back.Data, a.Data) {
			t.Fatalf("%+v came back as %+v (%v)", a, back, err)
		}
	})
}

// Likewise for amend results.
func FuzzParseAmendResult(f *testing.F) {
	for _, s := range []string{
		`{"origin":"xmpp","id":1,"target":2,"outcome":"applied","gateway":"!5eed0001","packet_id":77}`,
		`{"origin":"xmpp","id":1,"target":2,"outcome":"refused","reason":"TOO_LARGE"}`,
		`{"id":1,"outcome":"not_waiting","reason":""}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseAmendResult(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		out, err := r.Marshal()
		if err != nil {
			t.Fatalf("cannot encode %+v: %v", r, err)
		}
		if back, err := ParseAmendResult(out); err != nil || back != r {
			t.Fatalf("%+v came back as %+v (%v)", r, back, err)
		}
	})
}
