//go:build integration

package dist

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/serialgw"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// runner runs function nodes' code the way Node-RED calls it: each body
// inside an async function of msg, with node, context, flow, global and
// env, and one flow context shared by all of them. It reads the calls as
// JSON on stdin and prints what each returned.
const runner = `
const fs = require("fs");
const calls = JSON.parse(fs.readFileSync(0, "utf8"));
const store = {};
const flow = { get: (k) => store[k], set: (k, v) => { store[k] = v; } };
const node = { log() {}, warn() {}, error(e) { throw new Error(String(e)); }, status() {}, send() {}, done() {} };
const env = { get: () => undefined };
(async () => {
	const out = [];
	for (const c of calls) {
		const f = require(c.file);
		out.push((await f(c.msg, node, flow, flow, flow, env, {})) ?? null);
	}
	process.stdout.write(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
`

// nodeFunction writes a function node's body as a module of its own,
// wrapped as Node-RED wraps it, and checks that it parses.
func nodeFunction(t *testing.T, dir string, f flowNode) string {
	t.Helper()
	path := filepath.Join(dir, strings.ReplaceAll(f.Name, " ", "-")+".js")
	src := "module.exports = async function (msg, node, context, flow, global, env, RED) {\n" + f.Func + "\n};\n"
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("node", "--check", path).CombinedOutput(); err != nil {
		t.Fatalf("function %q does not parse: %v\n%s", f.Name, err, out)
	}
	return path
}

type call struct {
	File string `json:"file"`
	Msg  any    `json:"msg"`
}

func runFunctions(t *testing.T, dir string, calls []call) []json.RawMessage {
	t.Helper()
	in, _ := json.Marshal(calls)
	cmd := exec.Command("node", "-e", runner)
	cmd.Stdin = strings.NewReader(string(in))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, stderr.String())
	}
	var res []json.RawMessage
	if err := json.Unmarshal(out, &res); err != nil || len(res) != len(calls) {
		t.Fatalf("node printed %s (%v)", out, err)
	}
	return res
}

// The example flow's function nodes parse, and do what the flow says,
// run by node on what the bridge really publishes: the text sent is a
// JSON downlink the radio link accepts, with the message's id; a text
// heard shows with the sender's name from its node record; a result
// shows the text it is about and its outcome.
func TestNodeREDFunctions(t *testing.T) {
	testutil.NeedCommand(t, "node")
	nodes := loadFlow(t)
	dir := t.TempDir()
	inject := byName(t, nodes, "inject", "send a text")
	build := nodeFunction(t, dir, byName(t, nodes, "function", "build sendtext"))
	names := nodeFunction(t, dir, byName(t, nodes, "function", "remember names"))
	texts := nodeFunction(t, dir, byName(t, nodes, "function", "show texts with names"))
	outcome := nodeFunction(t, dir, byName(t, nodes, "function", "show the outcome"))

	// What the bridge publishes, made by the bridge's own code.
	const gw, ana = 0x5eed0001, 0xa1b2c3d4
	heard := &meshpb.MeshPacket{From: ana, To: mesh.Broadcast, Id: 7, RxTime: proto.Uint32(1795639119),
		PayloadVariant: &meshpb.MeshPacket_Decoded{Decoded: &meshpb.Data{Portnum: meshpb.PortNum_TEXT_MESSAGE_APP, Payload: []byte("Good morning")}}}
	uplink, err := mesh.JSONUplink(heard, gw, func(uint32) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	record, _ := json.Marshal(topics.NodeRecord{ID: mesh.NodeID(ana), Num: ana, LongName: "Ana's T-Beam", ShortName: "ANA"})
	const msgid = "8d2c3e2a5b1f4c07"
	failed, _ := topics.DownlinkResult{ID: json.RawMessage(`"` + msgid + `"`), RequestID: 99, Status: topics.DownlinkFailed,
		Reason: "RATE_LIMIT_EXCEEDED", Detail: "too much at once"}.Marshal()
	position, _ := json.Marshal(map[string]any{"type": "position", "from": ana, "payload": map[string]any{"latitude_i": 1}})
	asJSON := func(b []byte) any {
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		return v
	}

	out := runFunctions(t, dir, []call{
		{build, map[string]any{"_msgid": msgid, "payload": inject.Payload}},
		{names, map[string]any{"topic": topics.Node(mesh.NodeID(ana)), "payload": asJSON(record)}},
		{texts, map[string]any{"topic": topics.JSON(topics.Root("", "EU_868"), "LongFast", mesh.NodeID(gw)), "payload": asJSON(uplink)}},
		{texts, map[string]any{"topic": topics.JSON(topics.Root("", "EU_868"), "LongFast", mesh.NodeID(gw)), "payload": asJSON(position)}},
		{outcome, map[string]any{"topic": topics.JSONResult, "payload": asJSON(failed)}},
	})

	// The mqtt out node sends an object payload as its JSON.
	var sent struct {
		Payload json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal(out[0], &sent); err != nil {
		t.Fatalf("build sendtext returned %s: %v", out[0], err)
	}
	dl, id, err := serialgw.ParseDownlink(sent.Payload, gw)
	if err != nil {
		t.Fatalf("the flow's downlink %s is refused: %v", sent.Payload, err)
	}
	if dl.Type != mesh.DownlinkSendText || string(dl.Data.GetPayload()) != inject.Payload || dl.To != mesh.Broadcast || string(id) != `"`+msgid+`"` {
		t.Errorf("the flow's downlink %s parses as %+v with id %s", sent.Payload, dl, id)
	}

	payload := func(i int) string {
		var msg struct {
			Payload json.RawMessage `json:"payload"`
		}
		if err := json.Unmarshal(out[i], &msg); err != nil || msg.Payload == nil {
			t.Fatalf("call %d returned %s", i, out[i])
		}
		return string(msg.Payload)
	}
	if string(out[1]) != "null" || string(out[3]) != "null" {
		t.Errorf("a node record or a position was passed on: %s, %s", out[1], out[3])
	}
	if got, want := payload(2), `"[LongFast] Ana's T-Beam: Good morning"`; got != want {
		t.Errorf("the text shows as %s, want %s", got, want)
	}
	if got, want := payload(4), fmt.Sprintf(`"\"%s\": failed (RATE_LIMIT_EXCEEDED: too much at once)"`, inject.Payload); got != want {
		t.Errorf("the result shows as %s, want %s", got, want)
	}
}
