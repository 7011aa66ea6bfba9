package serialgw_test

import (
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/internal/spool"
	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/serialgw"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// answers collects results and amend results, whole.
type answers struct {
	mu      sync.Mutex
	results []topics.Result
	amends  []topics.AmendResult
}

func (r *rig) answers(t *testing.T) *answers {
	a := &answers{}
	for _, s := range []struct {
		topic string
		h     func(string, []byte)
	}{
		{topics.MeshResult, func(_ string, b []byte) {
			res, err := topics.ParseResult(b)
			if err != nil {
				t.Errorf("undecodable result: %v", err)
				return
			}
			a.mu.Lock()
			a.results = append(a.results, res)
			a.mu.Unlock()
		}},
		{topics.MeshAmendResult, func(_ string, b []byte) {
			res, err := topics.ParseAmendResult(b)
			if err != nil {
				t.Errorf("undecodable amend result %s: %v", b, err)
				return
			}
			a.mu.Lock()
			a.amends = append(a.amends, res)
			a.mu.Unlock()
		}},
	} {
		unsub, err := r.broker.Subscribe(s.topic, s.h)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(unsub)
	}
	return a
}

func (a *answers) amend(id uint32) (topics.AmendResult, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range a.amends {
		if r.ID == id {
			return r, true
		}
	}
	return topics.AmendResult{}, false
}

func (a *answers) result(id uint32) (topics.Result, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range a.results {
		if r.RequestID == id {
			return r, true
		}
	}
	return topics.Result{}, false
}

func (r *rig) amend(t *testing.T, a topics.Amend) {
	t.Helper()
	b, err := a.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.broker.Publish(topics.MeshAmendTo("!5eed0001"), b, false); err != nil {
		t.Fatal(err)
	}
}

func textData(s string) *meshpb.Data {
	return &meshpb.Data{Portnum: meshpb.PortNum_TEXT_MESSAGE_APP, Payload: []byte(s)}
}

// A request still waiting for the radio (texts are paced 2 s apart) is
// replaced in its place or cancelled; one the radio has is not, and the
// requester learns the packet id it went with; a replacement that cannot
// be sent leaves the request as it was. Results carry the packet id the
// radio sent each with, and a request offered again after its
// replacement (the requester restarted) is not queued a second time.
func TestAmendQueuedRequests(t *testing.T) {
	store, err := spool.Open(filepath.Join(t.TempDir(), "spool.db"), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	r := startRig(t, tcpTransport, func(c *serialgw.Config) { c.Spool = store })
	ans := r.answers(t)
	r.send(t, 1, "", "first")
	r.send(t, 2, "", "secnod")
	r.send(t, 3, "", "oops, not this")
	r.send(t, 4, "", "fourth")
	testutil.Eventually(t, wait, func() bool { return len(r.radio.Received()) == 1 }, "the first text never went")

	r.amend(t, topics.Amend{Origin: "test", ID: 101, Target: 1, Action: topics.AmendCancel})
	r.amend(t, topics.Amend{Origin: "test", ID: 102, Target: 2, Action: topics.AmendReplace, Data: textData("second")})
	r.amend(t, topics.Amend{Origin: "test", ID: 103, Target: 3, Action: topics.AmendCancel})
	r.amend(t, topics.Amend{Origin: "test", ID: 104, Target: 4, Action: topics.AmendReplace, Data: textData(strings.Repeat("x", 201))})
	r.amend(t, topics.Amend{Origin: "other", ID: 105, Target: 4, Action: topics.AmendCancel})
	// Offered again, as a requester does after a restart: the old content
	// and the new.
	r.send(t, 2, "", "secnod")
	r.send(t, 2, "", "second")

	want := map[uint32]topics.AmendOutcome{101: topics.AmendNotWaiting, 102: topics.AmendApplied, 103: topics.AmendApplied, 104: topics.AmendRefused, 105: topics.AmendNotWaiting}
	for id, outcome := range want {
		testutil.Eventually(t, wait, func() bool { _, ok := ans.amend(id); return ok }, "no answer to amend %d", id)
		if got, _ := ans.amend(id); got.Outcome != outcome || got.Gateway != "!5eed0001" {
			t.Errorf("amend %d: %+v, want %s", id, got, outcome)
		}
	}
	if got, _ := ans.amend(104); got.Reason != meshpb.Routing_TOO_LARGE.String() {
		t.Errorf("an oversized replacement refused with %q", got.Reason)
	}

	testutil.Eventually(t, wait, func() bool { return len(r.radio.Received()) == 3 }, "radio got %d packets, want 3", len(r.radio.Received()))
	var texts []string
	for _, p := range r.radio.Received() {
		texts = append(texts, string(p.GetDecoded().GetPayload()))
	}
	if !slices.Equal(texts, []string{"first", "second", "fourth"}) {
		t.Errorf("radio got %q", texts)
	}
	for i, id := range []uint32{1, 2, 4} {
		testutil.Eventually(t, wait, func() bool { _, ok := ans.result(id); return ok }, "no result for request %d", id)
		res, _ := ans.result(id)
		if sent := r.radio.Received()[i]; res.Reason != meshpb.Routing_NONE || res.PacketID != sent.GetId() || res.PacketID == 0 {
			t.Errorf("request %d: %+v; the radio got it as packet %d", id, res, sent.GetId())
		}
	}
	// Too late to cancel: the answer names the packet the first went as.
	if got, _ := ans.amend(101); got.PacketID != r.radio.Received()[0].GetId() {
		t.Errorf("amend of a sent request names packet %d, want %d", got.PacketID, r.radio.Received()[0].GetId())
	}
	if _, ok := ans.result(3); ok {
		t.Error("a cancelled request got a result")
	}
	if n, _, _, _ := store.Stats("radio-tx"); n != 0 {
		t.Errorf("%d packets left in the spool", n)
	}
	if !proto.Equal(r.radio.Received()[1].GetDecoded(), textData("second")) {
		t.Errorf("replacement sent as %v", r.radio.Received()[1].GetDecoded())
	}
}
