package topics

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
)

// The JSON records read as they always have: local tools rely on the field
// names. The first two are the examples in the README.
func TestRecordsJSON(t *testing.T) {
	tests := []struct {
		rec  any
		want string
	}{
		{NodeRecord{ID: "!a1b2c3d4", Num: 2712847316, LongName: "Ana's T-Beam", ShortName: "ANA", HWModel: "TBEAM", Role: "CLIENT", LastHeard: 1795639051},
			`{"id":"!a1b2c3d4","num":2712847316,"long_name":"Ana's T-Beam","short_name":"ANA","hw_model":"TBEAM","role":"CLIENT","last_heard":1795639051}`},
		{StatusRecord{State: LinkOnline, Device: "tcp://127.0.0.1:36739", Since: "2026-11-25T20:38:31Z", Node: "!5eed0001"},
			`{"state":"online","device":"tcp://127.0.0.1:36739","since":"2026-11-25T20:38:31Z","node":"!5eed0001"}`},
		{StatusRecord{State: LinkDisconnected, Device: "/dev/ttyUSB0", Since: "2026-11-25T20:38:31Z", Error: "gone", Node: "!5eed0001",
			AirtimeBlocked: true, AirtimeBlockedSince: "2026-11-25T20:30:00Z"},
			`{"state":"disconnected","device":"/dev/ttyUSB0","since":"2026-11-25T20:38:31Z","error":"gone","node":"!5eed0001","airtime_blocked":true,"airtime_blocked_since":"2026-11-25T20:30:00Z"}`},
		{NodeRecord{ID: "!00000002", Num: 2}, `{"id":"!00000002","num":2}`},
		{RadioRecord{ID: "!5eed0001", Num: 0x5eed0001, LongName: "SovereignRelay Sim", ShortName: "SIM", Firmware: "2.7.26", HWModel: "TBEAM",
			Region: "EU_868", Preset: "LONG_FAST", HopLimit: 3, RebootCount: 2, Root: "msh/EU_868", Proxy: true,
			Channels: []ChannelRecord{{Index: 0, Name: "LongFast", Role: "PRIMARY", Uplink: true, Downlink: true}}},
			`{"id":"!5eed0001","num":1592590337,"long_name":"SovereignRelay Sim","short_name":"SIM","firmware_version":"2.7.26","hw_model":"TBEAM",` +
				`"region":"EU_868","modem_preset":"LONG_FAST","hop_limit":3,"reboot_count":2,"mqtt_root":"msh/EU_868","mqtt_client_proxy":true,` +
				`"channels":[{"index":0,"name":"LongFast","role":"PRIMARY","uplink_enabled":true,"downlink_enabled":true}]}`},
	}
	for _, tt := range tests {
		b, err := json.Marshal(tt.rec)
		if err != nil || string(b) != tt.want {
			t.Errorf("%T encodes as\n%s (%v), want\n%s", tt.rec, b, err, tt.want)
		}
	}
	for s, want := range map[LinkState]string{LinkConnecting: "connecting", LinkOnline: "online", LinkDisconnected: "disconnected", LinkOffline: "offline"} {
		if string(s) != want {
			t.Errorf("link state %q, want %q", s, want)
		}
	}
}

// A send request and a result survive the broker, and sit where local
// tools and older versions of the other side look for them.
func TestRequestAndResult(t *testing.T) {
	req := SendRequest{Origin: OriginXMPP, ID: 7, To: 0x13572468, Channel: "village", ChannelIndex: 2,
		Data: &meshpb.Data{Portnum: meshpb.PortNum_TEXT_MESSAGE_APP, Payload: []byte("alice: hi")}}
	b, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var env meshpb.ServiceEnvelope
	if err := proto.Unmarshal(b, &env); err != nil || env.GetGatewayId() != OriginXMPP || env.GetChannelId() != "village" ||
		env.GetPacket().GetId() != 7 || env.GetPacket().GetTo() != 0x13572468 || env.GetPacket().GetChannel() != 2 ||
		string(env.GetPacket().GetDecoded().GetPayload()) != "alice: hi" {
		t.Errorf("request on the wire: %v (%v)", &env, err)
	}
	back, err := ParseSendRequest(b)
	if err != nil || back.Origin != req.Origin || back.ID != req.ID || back.To != req.To || back.Channel != req.Channel ||
		back.ChannelIndex != req.ChannelIndex || !proto.Equal(back.Data, req.Data) {
		t.Errorf("request back as %+v (%v)", back, err)
	}
	if _, err := ParseSendRequest([]byte{0xff}); err == nil {
		t.Error("garbage parsed as a request")
	}
	noData, _ := proto.Marshal(&meshpb.ServiceEnvelope{GatewayId: "x", Packet: &meshpb.MeshPacket{Id: 1}})
	if _, err := ParseSendRequest(noData); err == nil {
		t.Error("a request without a decoded packet parsed")
	}

	res := Result{Origin: OriginJSONDownlink, RequestID: 9, Reason: meshpb.Routing_RATE_LIMIT_EXCEEDED, Radio: 0x5eed0001, Channel: 1, PacketID: 0xdeadbeef}
	if b, err = res.Marshal(); err != nil {
		t.Fatal(err)
	}
	env.Reset()
	var rt meshpb.Routing
	if err := proto.Unmarshal(b, &env); err != nil || env.GetGatewayId() != OriginJSONDownlink ||
		env.GetPacket().GetDecoded().GetPortnum() != meshpb.PortNum_ROUTING_APP || env.GetPacket().GetDecoded().GetRequestId() != 9 ||
		proto.Unmarshal(env.GetPacket().GetDecoded().GetPayload(), &rt) != nil || rt.GetErrorReason() != meshpb.Routing_RATE_LIMIT_EXCEEDED ||
		env.GetPacket().GetId() != 0xdeadbeef {
		t.Errorf("result on the wire: %v (%v)", &env, err)
	}
	if got, err := ParseResult(b); err != nil || got != res {
		t.Errorf("result back as %+v (%v), want %+v", got, err, res)
	}
	if _, err := ParseResult(noData); err == nil {
		t.Error("a packet that is not a routing packet parsed as a result")
	}
}

// The gateways do not re-declare the contract: no struct of theirs has
// JSON fields that are all a contract record's, and none compares with,
// or passes on, a literal of the contract's wire values instead of the
// constant.
func TestGatewaysUseTheContract(t *testing.T) {
	records := map[string][]string{}
	for _, v := range []any{NodeRecord{}, RadioRecord{}, ChannelRecord{}, StatusRecord{}, DownlinkResult{}, Amend{}, AmendResult{}, XMPPStatusRecord{}} {
		rt := reflect.TypeOf(v)
		for i := range rt.NumField() {
			name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
			records[rt.Name()] = append(records[rt.Name()], name)
		}
	}
	// Link states are never spelt out where they are compared or passed on;
	// origins and downlink statuses (common words: "xmpp" names a log
	// component too, "queued" is a log key) never where they are compared.
	states := map[string]bool{}
	for _, s := range []LinkState{LinkConnecting, LinkOnline, LinkDisconnected, LinkOffline} {
		states[string(s)] = true
	}
	compared := map[string]bool{OriginXMPP: true, OriginJSONDownlink: true}
	for _, s := range []DownlinkStatus{DownlinkQueued, DownlinkSent, DownlinkAcked, DownlinkRefused, DownlinkFailed} {
		compared[string(s)] = true
	}
	for _, s := range []string{string(AmendCancel), string(AmendReplace), string(AmendApplied), string(AmendNotWaiting), string(AmendRefused)} {
		compared[s] = true
	}
	for s := range states {
		compared[s] = true
	}

	for _, dir := range []string{"../serialgw", "../xmppgw", "../hass"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no Go files in %s: %v", dir, err)
		}
		for _, path := range files {
			if strings.HasSuffix(path, "_test.go") {
				continue
			}
			src, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, path, src, 0)
			if err != nil {
				t.Fatal(err)
			}
			literal := func(e ast.Expr) (string, bool) {
				lit, ok := e.(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					return "", false
				}
				s, err := strconv.Unquote(lit.Value)
				return s, err == nil
			}
			flag := func(e ast.Expr, wire map[string]bool) {
				if s, ok := literal(e); ok && wire[s] {
					t.Errorf("%s: the literal %q; use the constant from package topics", fset.Position(e.Pos()), s)
				}
			}
			ast.Inspect(f, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.StructType:
					var tags []string
					for _, fld := range n.Fields.List {
						if fld.Tag == nil {
							continue
						}
						tag, _ := strconv.Unquote(fld.Tag.Value)
						if name, _, _ := strings.Cut(reflect.StructTag(tag).Get("json"), ","); name != "" && name != "-" {
							tags = append(tags, name)
						}
					}
					for rec, names := range records {
						if len(tags) > 0 && !slices.ContainsFunc(tags, func(s string) bool { return !slices.Contains(names, s) }) {
							t.Errorf("%s: a struct with the JSON fields %v re-declares topics.%s", fset.Position(n.Pos()), tags, rec)
						}
					}
				case *ast.BinaryExpr:
					if n.Op == token.EQL || n.Op == token.NEQ {
						flag(n.X, compared)
						flag(n.Y, compared)
					}
				case *ast.CaseClause:
					for _, e := range n.List {
						flag(e, compared)
					}
				case *ast.CallExpr:
					for _, e := range n.Args {
						flag(e, states)
					}
				case *ast.KeyValueExpr:
					flag(n.Value, states)
				case *ast.BasicLit:
					if s, ok := literal(n); ok && strings.HasPrefix(s, bridgeRoot+"/") {
						t.Errorf("%s: the topic %q spelt out; use the constant from package topics", fset.Position(n.Pos()), s)
					}
				}
				return true
			})
		}
	}
}
