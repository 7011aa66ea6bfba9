package serialgw_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jshiffer/lora-xmpp-bridge/broker"
	"github.com/jshiffer/lora-xmpp-bridge/internal/meshsim"
	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/serialgw"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// message is one message seen on the broker.
type message struct {
	topic   string
	payload []byte
}

// watch collects the messages on filters from now on, retained ones first.
type watch struct {
	mu  sync.Mutex
	got []message
}

func watchTopics(t *testing.T, b *broker.Embedded, filters ...string) *watch {
	t.Helper()
	w := &watch{}
	for _, f := range filters {
		unsub, err := b.Subscribe(f, func(topic string, p []byte) {
			w.mu.Lock()
			w.got = append(w.got, message{topic, append([]byte(nil), p...)})
			w.mu.Unlock()
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(unsub)
	}
	return w
}

// since returns the messages on topic from the n-th message seen on.
func (w *watch) since(n int, topic string) []message {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []message
	for _, m := range w.got[min(n, len(w.got)):] {
		if m.topic == topic {
			out = append(out, m)
		}
	}
	return out
}

func (w *watch) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.got)
}

// topics lists the topics seen, each once, in order.
func (w *watch) topics() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	seen := map[string]bool{}
	for _, m := range w.got {
		if !seen[m.topic] {
			seen[m.topic] = true
			out = append(out, m.topic)
		}
	}
	return out
}

// hasState reports whether a status record in msgs has state.
func hasState(t *testing.T, msgs []message, state topics.LinkState, node string) bool {
	for _, m := range msgs {
		var rec topics.StatusRecord
		if err := json.Unmarshal(m.payload, &rec); err != nil {
			t.Errorf("status record %q: %v", m.payload, err)
			continue
		}
		if rec.State == state {
			if rec.Node != node {
				t.Errorf("%s record on %s names node %q, want %q", state, m.topic, rec.Node, node)
			}
			return true
		}
	}
	return false
}

// The radio side's records end in its gateway id, the radio's node id,
// and its radio record names the mesh it is on; a request on that radio's
// own send topic is sent and answered, one for another radio is not
// taken. The id is kept in the state directory: started again while the
// radio does not answer, the radio side says it is connecting under the
// same id, and takes requests for that radio, before any handshake.
func TestGatewayID(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	simCfg := meshsim.Demo()
	simCfg.TrafficInterval = 0
	radio := meshsim.New(simCfg)
	dev, _ := tcpTransport.start(t, ctx, radio)
	b, err := broker.NewEmbedded(broker.Config{Listen: broker.Off}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	b.Start()
	defer b.Close()
	const id = "!5eed0001"
	w := watchTopics(t, b, topics.StatusFilter, topics.RadioFilter)
	r := &rig{radio: radio, broker: b}
	res := r.results(t)

	stateDir := t.TempDir()
	var gw *serialgw.Gateway
	run := func() (stop func()) {
		var err error
		gw, err = serialgw.New(serialgw.Config{Device: dev, Mesh: "valley", StateDir: stateDir, TextInterval: 2100 * time.Millisecond,
			HandshakeTimeout: time.Hour, BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond}, b, testLog(t))
		if err != nil {
			t.Fatal(err)
		}
		gctx, gcancel := context.WithCancel(ctx)
		done := make(chan struct{})
		g := gw
		go func() { g.Run(gctx); close(done) }()
		return func() { gcancel(); <-done }
	}

	stop := run()
	// Up is set a moment before the online record goes out: wait for the record.
	testutil.Eventually(t, wait, func() bool { return radio.Ready() && len(w.since(0, topics.Status(id))) > 0 }, "no handshake")
	// The first ever start knows no id until the radio answers: nothing
	// is published before it is online.
	if st := w.since(0, topics.Status(id)); len(st) == 0 || !hasState(t, st[:1], topics.LinkOnline, id) {
		t.Errorf("status records %q, want online first", st)
	}
	if got := w.topics(); len(got) != 2 || got[0] != topics.Radio(id) || got[1] != topics.Status(id) {
		t.Errorf("records on %q, want the radio's and the status under %s", got, id)
	}
	var rec topics.RadioRecord
	if rr := w.since(0, topics.Radio(id)); len(rr) != 1 || json.Unmarshal(rr[0].payload, &rec) != nil || rec.ID != id || rec.Mesh != "valley" {
		t.Errorf("radio records %q, want one for %s on mesh valley", rr, id)
	}
	if kept, err := os.ReadFile(filepath.Join(stateDir, "radio-node")); err != nil || string(kept) != id+"\n" {
		t.Errorf("kept radio node %q, %v", kept, err)
	}

	r.sendOn(t, topics.MeshTXTo("!0000beef"), 1, "", "for another radio")
	r.sendOn(t, topics.MeshTXTo(id), 2, "", "for this radio")
	res.wait(t, 2, meshpb.Routing_NONE)
	if got := radio.Received(); len(got) != 1 || string(got[0].GetDecoded().GetPayload()) != "for this radio" {
		t.Errorf("radio received %v", got)
	}
	if got := res.of(1); len(got) != 0 {
		t.Errorf("a request for another radio got results %v", got)
	}
	stop()
	if !hasState(t, w.since(0, topics.Status(id)), topics.LinkOffline, id) {
		t.Errorf("no offline record under %s", id)
	}

	// Started again; the radio does not answer.
	radio.IgnoreConfigRequests(1 << 30)
	handshakes, mark := radio.Handshakes(), w.len()
	stop = run()
	defer stop()
	testutil.Eventually(t, wait, func() bool { return hasState(t, w.since(mark, topics.Status(id)), topics.LinkConnecting, id) },
		"no connecting record under %s after the restart: %q", id, w.since(mark, topics.Status(id)))
	r.sendOn(t, topics.MeshTXTo(id), 3, "", "while the radio is away")
	testutil.Eventually(t, wait, func() bool { return gw.QueueLen() == 1 }, "%d packets queued, want 1", gw.QueueLen())
	if gw.Up() || radio.Handshakes() != handshakes {
		t.Errorf("the radio answered: the test proves nothing")
	}
}

// When another radio answers on the same port (here: the radio's node
// number changes), the radio side's records and send topic move to the new
// id, and the old id's retained records are cleared.
func TestGatewayIDMoves(t *testing.T) {
	stateDir := t.TempDir()
	r := startRig(t, tcpTransport, func(c *serialgw.Config) { c.StateDir = stateDir })
	const oldID, newID = "!5eed0001", "!5eed0002"
	w := watchTopics(t, r.broker, topics.StatusFilter, topics.RadioFilter)
	res := r.results(t)
	testutil.Eventually(t, wait, func() bool { return hasState(t, w.since(0, topics.Status(oldID)), topics.LinkOnline, oldID) }, "not online under %s", oldID)

	r.radio.SetNodeNum(0x5eed0002)
	mark := w.len()
	r.radio.Reboot()
	testutil.Eventually(t, wait, func() bool { return hasState(t, w.since(mark, topics.Status(newID)), topics.LinkOnline, newID) },
		"not online under %s: %q", newID, w.topics())
	for _, topic := range []string{topics.Status(oldID), topics.Radio(oldID)} {
		if got := w.since(mark, topic); len(got) != 1 || len(got[0].payload) != 0 {
			t.Errorf("%s after the move: %q, want it cleared", topic, got)
		}
	}
	// What a newcomer finds retained is the new radio alone.
	now := watchTopics(t, r.broker, topics.StatusFilter, topics.RadioFilter)
	if got := now.topics(); len(got) != 2 || got[0] != topics.Status(newID) || got[1] != topics.Radio(newID) {
		t.Errorf("retained records on %q, want only %s's", got, newID)
	}
	if kept, err := os.ReadFile(filepath.Join(stateDir, "radio-node")); err != nil || string(kept) != newID+"\n" {
		t.Errorf("kept radio node %q, %v", kept, err)
	}

	r.sendOn(t, topics.MeshTXTo(oldID), 1, "", "to the radio that left")
	r.sendOn(t, topics.MeshTXTo(newID), 2, "", "to the new radio")
	res.wait(t, 2, meshpb.Routing_NONE)
	if got := r.radio.Received(); len(got) != 1 || string(got[0].GetDecoded().GetPayload()) != "to the new radio" {
		t.Errorf("radio received %v", got)
	}
	if got := res.of(1); len(got) != 0 {
		t.Errorf("a request for the radio that left got results %v", got)
	}
}

// A kept id that is not a node id is ignored: the radio's handshake tells
// the id, and it is kept again.
func TestDamagedRadioNode(t *testing.T) {
	stateDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(stateDir, "radio-node"), []byte("!5eed\x00garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := startRig(t, tcpTransport, func(c *serialgw.Config) { c.StateDir = stateDir })
	w := watchTopics(t, r.broker, topics.StatusFilter)
	testutil.Eventually(t, wait, func() bool {
		return hasState(t, w.since(0, topics.Status("!5eed0001")), topics.LinkOnline, "!5eed0001")
	}, "not online: %q", w.topics())
	if got := w.topics(); len(got) != 1 {
		t.Errorf("status records on %q", got)
	}
	if kept, err := os.ReadFile(filepath.Join(stateDir, "radio-node")); err != nil || string(kept) != "!5eed0001\n" {
		t.Errorf("kept radio node %q, %v", kept, err)
	}
}
