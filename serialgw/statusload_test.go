package serialgw_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/jshiffer/lora-xmpp-bridge/internal/meshsim"
	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/serialgw"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// loadRecords collects the status records published from now on, each
// decoded strictly: nothing the contract's type does not have.
type loadRecords struct {
	mu   sync.Mutex
	recs []topics.StatusRecord
}

func (r *rig) loadRecords(t *testing.T) *loadRecords {
	lr := &loadRecords{}
	unsub, err := r.broker.Subscribe(topics.StatusFilter, func(_ string, b []byte) {
		var rec topics.StatusRecord
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&rec); err != nil {
			t.Errorf("status record %s: %v", b, err)
			return
		}
		lr.mu.Lock()
		lr.recs = append(lr.recs, rec)
		lr.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unsub)
	return lr
}

// since returns the records from the n-th on.
func (lr *loadRecords) since(n int) []topics.StatusRecord {
	lr.mu.Lock()
	defer lr.mu.Unlock()
	return append([]topics.StatusRecord(nil), lr.recs[min(n, len(lr.recs)):]...)
}

// waitFor waits for a record from the n-th on that ok accepts, and returns
// its index.
func (lr *loadRecords) waitFor(t *testing.T, n int, ok func(topics.StatusRecord) bool, what string) int {
	t.Helper()
	found := -1
	testutil.Eventually(t, wait, func() bool {
		for i, rec := range lr.since(n) {
			if ok(rec) {
				found = n + i
				return true
			}
		}
		return false
	}, "%s: status records %s", what, fmtRecs(lr.since(n)))
	return found
}

func fmtRecs(recs []topics.StatusRecord) string {
	var b bytes.Buffer
	for _, r := range recs {
		fmt.Fprintf(&b, "\n  %+v", r)
	}
	return b.String()
}

// The status record carries the queue's depth and the airtime used of the
// window's budget, as the metrics read them, and follows them while they
// change (every StatusInterval, here 20 ms): a burst of texts shows as a
// queue that drains, and the airtime they used stays once they are sent.
func TestStatusCarriesLoad(t *testing.T) {
	r := startRig(t, tcpTransport, func(c *serialgw.Config) { c.StatusInterval = 20 * time.Millisecond })
	lr := r.loadRecords(t)
	res := r.results(t)
	// EU_868 allows 10 % of an hour; the bridge takes half of it.
	const budget = 180.0
	if _, a := r.gw.Airtime(); a.Seconds() != budget {
		t.Fatalf("airtime budget %v, want %vs", a, budget)
	}
	// The record that says online (retained) has the budget already.
	lr.waitFor(t, 0, func(rec topics.StatusRecord) bool {
		return rec.State == topics.LinkOnline && rec.AirtimeBudget == budget && rec.QueueDepth == 0 && rec.AirtimeUsed == 0
	}, "no online record with the budget")

	for i := uint32(1); i <= 3; i++ {
		r.send(t, i, "", fmt.Sprintf("text %d of a burst", i))
	}
	// The first goes at once; the others wait for the text spacing.
	queued := lr.waitFor(t, 0, func(rec topics.StatusRecord) bool { return rec.QueueDepth >= 2 }, "the burst never showed queued")
	for i := uint32(1); i <= 3; i++ {
		res.wait(t, i, meshpb.Routing_NONE)
	}
	used, _ := r.gw.Airtime()
	if used <= 0 {
		t.Fatalf("three texts used no airtime")
	}
	want := math.Round(used.Seconds()*1000) / 1000
	lr.waitFor(t, queued, func(rec topics.StatusRecord) bool {
		return rec.QueueDepth == 0 && rec.AirtimeUsed == want && rec.AirtimeBudget == budget
	}, fmt.Sprintf("the queue never showed empty with %vs of airtime used", want))
	for _, rec := range lr.since(0) {
		if rec.State != topics.LinkOnline || rec.Node != "!5eed0001" || rec.AirtimeBudget != budget || rec.AirtimeUsed > want || rec.QueueDepth > 3 {
			t.Errorf("status record %+v", rec)
		}
	}
	// The load no longer changes: the record is not published again for it.
	n := len(lr.since(0))
	r.send(t, 4, "", "one more")
	res.wait(t, 4, meshpb.Routing_NONE)
	lr.waitFor(t, n, func(rec topics.StatusRecord) bool { return rec.AirtimeUsed > want }, "the next text's airtime never showed")
	for i, rec := range lr.since(n) {
		if i > 0 && rec == lr.since(n)[i-1] {
			t.Errorf("the same status published twice in a row: %+v", rec)
		}
	}
}

// The airtime used is that of the current window: it goes back to 0 (left
// out of the record) as what was sent leaves the window, without anything
// sent meanwhile. The window is seconds instead of an hour to keep the
// test short.
func TestStatusAirtimeLeavesTheWindow(t *testing.T) {
	r := startRig(t, tcpTransport, func(c *serialgw.Config) {
		c.StatusInterval, c.AirtimeWindow = 20*time.Millisecond, 2*time.Second
	}, func(c *meshsim.Config) {
		c.Preset, c.DutyWindow = meshpb.Config_LoRaConfig_SHORT_TURBO, 2*time.Second
	})
	lr := r.loadRecords(t)
	res := r.results(t)
	r.sendData(t, 1, meshpb.PortNum_PRIVATE_APP, make([]byte, 10))
	res.wait(t, 1, meshpb.Routing_NONE)
	spent := lr.waitFor(t, 0, func(rec topics.StatusRecord) bool { return rec.AirtimeUsed > 0 }, "the packet's airtime never showed")
	lr.waitFor(t, spent, func(rec topics.StatusRecord) bool { return rec.AirtimeUsed == 0 }, "the airtime used never left the window")
	if used, _ := r.gw.Airtime(); used != 0 {
		t.Errorf("the metrics still read %v of airtime used", used)
	}
}
