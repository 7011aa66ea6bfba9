package serialgw_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jshiffer/lora-xmpp-bridge/broker"
	"github.com/jshiffer/lora-xmpp-bridge/internal/meshsim"
	"github.com/jshiffer/lora-xmpp-bridge/internal/spool"
	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/serialgw"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// downlinkResults reads the JSON downlinks' results on topics.JSONResult.
type downlinkResults struct {
	read func() [][]byte // the payloads so far, in order
}

// downlinkResults subscribes to the results through the broker's
// in-process client.
func (r *rig) downlinkResults(t *testing.T) *downlinkResults {
	var mu sync.Mutex
	var got [][]byte
	unsub, err := r.broker.Subscribe(topics.JSONResult, func(_ string, b []byte) {
		mu.Lock()
		got = append(got, append([]byte(nil), b...))
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unsub)
	return &downlinkResults{read: func() [][]byte {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}}
}

func (d *downlinkResults) all(t *testing.T) []topics.DownlinkResult {
	t.Helper()
	var out []topics.DownlinkResult
	for _, b := range d.read() {
		res, err := topics.ParseDownlinkResult(b)
		if err != nil {
			t.Fatalf("result %s: %v", b, err)
		}
		out = append(out, res)
	}
	return out
}

// of returns the results of the request whose own id is written as id
// ("" for the requests without one).
func (d *downlinkResults) of(t *testing.T, id string) []topics.DownlinkResult {
	t.Helper()
	var out []topics.DownlinkResult
	for _, res := range d.all(t) {
		if string(res.ID) == id {
			out = append(out, res)
		}
	}
	return out
}

// wait waits until the request with id has as many results as want, and
// checks their statuses.
func (d *downlinkResults) wait(t *testing.T, id string, want ...topics.DownlinkStatus) []topics.DownlinkResult {
	t.Helper()
	testutil.Eventually(t, wait, func() bool { return len(d.of(t, id)) >= len(want) }, "request %s: results %s, want %v", id, d.show(t, id), want)
	got := d.of(t, id)
	if len(got) != len(want) {
		t.Errorf("request %s: results %s, want %v", id, d.show(t, id), want)
		return got
	}
	for i, res := range got {
		if res.Status != want[i] || res.RequestID == 0 || res.RequestID != got[0].RequestID {
			t.Errorf("request %s: results %s, want %v with one request id", id, d.show(t, id), want)
		}
	}
	return got
}

func (d *downlinkResults) show(t *testing.T, id string) string {
	t.Helper()
	var s []string
	for _, res := range d.of(t, id) {
		b, _ := res.Marshal()
		s = append(s, string(b))
	}
	return "[" + strings.Join(s, " ") + "]"
}

// A JSON downlink published before the radio's first handshake waits, and
// gets its results once the radio is known: queued and sent, or refused
// when it does not parse; one for another region's root is not this
// radio's and gets none. Nothing is reported before the radio answers.
func TestJSONDownlinkBeforeHandshakeResults(t *testing.T) {
	r := launchRig(t, tcpTransport, func(c *serialgw.Config) { c.HandshakeTimeout = 300 * time.Millisecond },
		func(radio *meshsim.Radio) { radio.IgnoreConfigRequests(1 << 30) })
	res := r.downlinkResults(t)
	testutil.Eventually(t, wait, func() bool { return r.gw.Stats.Handshakes.Load() >= 1 }, "the bridge never asked the radio")
	r.publish(t, "msh/EU_868/2/json/mqtt/", `{"id":"early","type":"sendtext","payload":"before the handshake"}`)
	r.publish(t, "msh/EU_868/2/json/mqtt/", `{"id":"early-bad","type":"sendtext","payload":`)
	r.publish(t, "msh/US/2/json/mqtt/", `{"id":"other-root","type":"sendtext","payload":"for another gateway"}`)
	// All three wait, unparsed, in the transmit queue.
	testutil.Eventually(t, wait, func() bool { return r.gw.QueueLen() == 3 }, "queue holds %d, want 3", r.gw.QueueLen())
	if got := res.all(t); len(got) != 0 || r.radio.Ready() {
		t.Fatalf("results before the radio answered: %v (radio ready %v)", got, r.radio.Ready())
	}

	r.radio.IgnoreConfigRequests(0)
	early := res.wait(t, `"early"`, topics.DownlinkQueued, topics.DownlinkSent)
	bad := res.wait(t, `"early-bad"`, topics.DownlinkRefused)
	if bad[0].Reason != "BAD_REQUEST" || !strings.Contains(bad[0].Detail, "malformed JSON") || bad[0].Gateway != "!5eed0001" {
		t.Errorf("refusal %+v", bad[0])
	}
	if p := r.radio.Received(); len(p) != 1 || p[0].GetId() != early[1].PacketID || early[0].PacketID != early[1].PacketID {
		t.Errorf("radio got %v; results %+v", p, early)
	}
	// After a request that comes later has its result, none came for the
	// other root's.
	r.publish(t, "msh/EU_868/2/json/mqtt/", `{"id":"marker","type":"sendtext","payload":"marks the end"}`)
	res.wait(t, `"marker"`, topics.DownlinkQueued, topics.DownlinkSent)
	if got := res.of(t, `"other-root"`); len(got) != 0 {
		t.Errorf("results for another root's downlink: %+v", got)
	}
	if n := len(res.all(t)); n != 5 {
		t.Errorf("%d results, want 5: %s", n, res.show(t, `"early"`))
	}
}

// A full transmit queue refuses a JSON downlink with RATE_LIMIT_EXCEEDED,
// and its result says so with the client's id.
func TestQueueFullDownlinkResult(t *testing.T) {
	r := startRig(t, tcpTransport, func(c *serialgw.Config) { c.TextInterval, c.QueueLimit = time.Hour, 3 })
	res := r.downlinkResults(t)
	send := func(i int) {
		r.publish(t, "msh/EU_868/2/json/mqtt/", fmt.Sprintf(`{"id":%d,"type":"sendtext","payload":"text %d"}`, i, i))
	}
	// Texts an hour apart: after the first, every text waits.
	send(0)
	res.wait(t, "0", topics.DownlinkQueued, topics.DownlinkSent)
	for i := 1; i <= 4; i++ {
		send(i)
	}
	for i := 1; i <= 3; i++ {
		res.wait(t, fmt.Sprint(i), topics.DownlinkQueued)
	}
	full := res.wait(t, "4", topics.DownlinkRefused)
	if full[0].Reason != "RATE_LIMIT_EXCEEDED" || full[0].Detail == "" || full[0].PacketID != 0 {
		t.Errorf("refusal %+v", full[0])
	}
}

// A direct message queued while the radio is away keeps its client's id
// and its wish for an acknowledgement across a restart of the bridge: it
// is answered acked after the restart, with no second "queued".
func TestDownlinkResultsAcrossRestart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	simCfg := meshsim.Demo()
	simCfg.TrafficInterval = 0
	simCfg.AnswerDirect = func(*meshpb.MeshPacket) (meshpb.Routing_Error, bool) { return meshpb.Routing_NONE, true }
	radio := meshsim.New(simCfg)
	dev, replug := tcpTransport.start(t, ctx, radio)
	b, err := broker.NewEmbedded(broker.Config{Listen: broker.Off}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	b.Start()
	defer b.Close()
	store, err := spool.Open(filepath.Join(t.TempDir(), "spool.db"), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	r := &rig{radio: radio, broker: b}
	res := r.downlinkResults(t)
	state := t.TempDir()
	run := func() (stop func()) {
		gw, err := serialgw.New(serialgw.Config{Device: dev, StateDir: state, Spool: store, HandshakeTimeout: time.Hour,
			BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond}, b, testLog(t))
		if err != nil {
			t.Fatal(err)
		}
		gctx, gcancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { gw.Run(gctx); close(done) }()
		return func() { gcancel(); <-done }
	}

	stop := run()
	testutil.Eventually(t, wait, radio.Ready, "no handshake")
	radio.IgnoreConfigRequests(1 << 30)
	replug()
	testutil.Eventually(t, wait, func() bool { return !radio.Ready() }, "radio still ready")
	r.publish(t, "msh/EU_868/2/json/mqtt/", `{"id":"kept","type":"sendtext","payload":"across a restart","to":2712847316}`)
	res.wait(t, `"kept"`, topics.DownlinkQueued)
	stop()

	radio.IgnoreConfigRequests(0)
	stop = run()
	defer stop()
	got := res.wait(t, `"kept"`, topics.DownlinkQueued, topics.DownlinkAcked)
	if p := radio.Received(); len(p) != 1 || !p[0].GetWantAck() || p[0].GetId() != got[1].PacketID {
		t.Errorf("radio got %v; results %+v", p, got)
	}
}
