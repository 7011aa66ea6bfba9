package serialgw

import (
	"errors"
	"testing"
	"time"

	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
)

func TestPacer(t *testing.T) {
	p := newPacer(2500 * time.Millisecond)
	t0 := time.Unix(1000, 0)
	text, pos := meshpb.PortNum_TEXT_MESSAGE_APP, meshpb.PortNum_POSITION_APP
	if w := p.wait(text, t0, 1); w != 0 {
		t.Errorf("first text waits %v", w)
	}
	p.sent(text, t0)
	tests := []struct {
		port meshpb.PortNum
		at   time.Duration
		want time.Duration
	}{
		{text, 0, 2500 * time.Millisecond},
		{text, 2 * time.Second, 500 * time.Millisecond},
		{text, 2500 * time.Millisecond, 0},
		{text, time.Hour, 0},
		{pos, 0, 0}, // other ports are paced on their own
		{meshpb.PortNum_ROUTING_APP, 0, 0},
	}
	for _, tt := range tests {
		if got := p.wait(tt.port, t0.Add(tt.at), 1); got != tt.want {
			t.Errorf("wait(%v, +%v) = %v, want %v", tt.port, tt.at, got, tt.want)
		}
	}
	if got := p.wait(text, t0.Add(2*time.Second), 2); got != 3*time.Second {
		t.Errorf("a busy channel doubles the spacing: wait %v, want 3s", got)
	}
	p.sent(pos, t0)
	if got := p.wait(pos, t0.Add(10*time.Second), 1); got != 500*time.Millisecond {
		t.Errorf("position 10 s later waits %v, want 500ms", got)
	}
}

func TestDedupe(t *testing.T) {
	d := newDedupe(3, time.Minute)
	t0 := time.Unix(1000, 0)
	steps := []struct {
		from, id uint32
		at       time.Duration
		want     bool
	}{
		{1, 10, 0, false},
		{1, 10, time.Second, true},  // the same packet from a second relay
		{2, 10, time.Second, false}, // same id, other sender: a different packet
		{1, 11, time.Second, false},
		{1, 12, time.Second, false}, // a fourth key pushes out the oldest
		{1, 10, 2 * time.Second, false},
		{2, 10, 2 * time.Minute, false}, // expired
	}
	for i, s := range steps {
		if got := d.seen(s.from, s.id, t0.Add(s.at)); got != s.want {
			t.Errorf("step %d: seen(%d, %d) = %v, want %v", i, s.from, s.id, got, s.want)
		}
	}
}

func TestTxQueue(t *testing.T) {
	q := newTxQueue(2)
	a, b, c := &request{id: 1}, &request{id: 2}, &request{id: 3}
	if q.push(a) != nil || q.push(b) != nil {
		t.Fatal("push refused below the limit")
	}
	if err := q.push(c); !errors.Is(err, errQueueFull) {
		t.Errorf("push over the limit: %v", err)
	}
	select {
	case <-q.ready:
	default:
		t.Error("push did not signal")
	}
	if q.peek() != a {
		t.Fatal("not FIFO")
	}
	if q.pop(b) || !q.pop(a) {
		t.Fatal("pop took a request that was not the head, or not the head")
	}
	q.pushFront(a)
	if q.peek() != a || q.len() != 2 {
		t.Error("pushFront did not put the request back at the head")
	}
}

// An amend swaps requests, never changes one in place, and a request the
// session peeked at and that was swapped meanwhile is not popped.
func TestTxQueueSwap(t *testing.T) {
	q := newTxQueue(4)
	a, b, c := &request{id: 1, origin: "x"}, &request{id: 2, origin: "x"}, &request{id: 3, origin: "x"}
	_ = q.push(a)
	_ = q.push(b)
	found := func(origin string, id uint32) *request { r, _ := q.find(origin, id); return r }
	if found("x", 2) != b || found("y", 2) != nil || found("x", 9) != nil {
		t.Error("find does not match on origin and id")
	}
	if _, snap := q.find("x", 2); snap.id != 2 || &snap == b {
		t.Error("find's snapshot is not a copy of the request")
	}
	head := q.peek()
	b2 := &request{id: 1, origin: "x"}
	if !q.swap(a, b2) || q.peek() != b2 || q.len() != 2 {
		t.Fatal("swap did not put the replacement in place")
	}
	if q.pop(head) {
		t.Error("the request swapped out after peek was popped")
	}
	if !q.swap(b, nil) || q.len() != 1 || found("x", 2) != nil {
		t.Error("swap with nil did not remove the request")
	}
	if q.swap(c, nil) || q.swap(b, a) {
		t.Error("swapped a request that is not in the queue")
	}
}

func TestIDs(t *testing.T) {
	var g idGen
	seen := map[uint32]bool{}
	for i := 0; i < 5000; i++ {
		id := g.next()
		if id == 0 || seen[id] {
			t.Fatalf("id %d repeated or zero at %d", id, i)
		}
		seen[id] = true
	}
}

func TestRadioChannels(t *testing.T) {
	r := &radioState{lora: &meshpb.Config_LoRaConfig{UsePreset: true, ModemPreset: meshpb.Config_LoRaConfig_MEDIUM_FAST, HopLimit: 5}}
	r.channels[0] = &meshpb.Channel{Index: 0, Role: meshpb.Channel_PRIMARY, Settings: &meshpb.ChannelSettings{Psk: []byte{1}}}
	r.channels[1] = &meshpb.Channel{Index: 1, Role: meshpb.Channel_SECONDARY, Settings: &meshpb.ChannelSettings{Name: "village"}}
	r.channels[2] = &meshpb.Channel{Index: 2, Role: meshpb.Channel_DISABLED, Settings: &meshpb.ChannelSettings{Name: "off"}}
	if n, ok := r.channelName(0); !ok || n != "MediumFast" {
		t.Errorf("unnamed primary = %q, %v; want the preset name", n, ok)
	}
	if n, ok := r.channelName(1); !ok || n != "village" {
		t.Errorf("channel 1 = %q", n)
	}
	for _, i := range []uint32{2, 3, 99} {
		if _, ok := r.channelName(i); ok {
			t.Errorf("channel %d should not be usable", i)
		}
	}
	if i, err := r.channelIndex("VILLAGE"); err != nil || i != 1 {
		t.Errorf("channelIndex(VILLAGE) = %d, %v", i, err)
	}
	if _, err := r.channelIndex("off"); err == nil {
		t.Error("disabled channel found by name")
	}
	if k, _ := r.channelKey(1); len(k) != 16 || k[0] != 0xd4 {
		t.Errorf("secondary without a key should borrow the primary's, got % x", k)
	}
	if r.hopLimit() != 5 {
		t.Errorf("hop limit = %d", r.hopLimit())
	}
	r.lora = &meshpb.Config_LoRaConfig{UsePreset: false, Bandwidth: 125}
	if n, _ := r.channelName(0); n != "Custom" {
		t.Errorf("unnamed primary without a preset = %q, want Custom", n)
	}
}

// The airtime bucket lets a burst of a tenth of the window's allowance go
// at once, then one packet as the share earns it; a packet larger than the
// whole burst goes once the bucket is full, and the debt it leaves is paid
// before the next.
func TestAirtimeBucket(t *testing.T) {
	var a airtime
	a.configure(&meshpb.Config_LoRaConfig{UsePreset: true, ModemPreset: meshpb.Config_LoRaConfig_LONG_FAST, Region: meshpb.Config_LoRaConfig_EU_868}, time.Hour, 0.5)
	cost := a.cost(&meshpb.Data{Portnum: meshpb.PortNum_PRIVATE_APP, Payload: make([]byte, 233)})
	t0 := time.Unix(1000, 0)
	sent := 0
	for a.wait(t0, cost) == 0 {
		a.spend(t0, cost)
		sent++
	}
	// 180 s allowance, 18 s burst, 2.16 s a packet.
	if want := int((18 * time.Second) / cost); sent != want {
		t.Errorf("a burst of %d packets, want %d", sent, want)
	}
	w := a.wait(t0, cost)
	if earn := time.Duration(float64(cost) / 0.05); w <= 0 || w > earn {
		t.Errorf("after the burst a packet waits %v, want up to %v (its cost at 5 %% of the time)", w, earn)
	}
	if got := a.wait(t0.Add(w), cost); got != 0 {
		t.Errorf("after the wait, still %v to go", got)
	}

	// A share so small that one packet is more than the burst.
	a = airtime{}
	a.configure(&meshpb.Config_LoRaConfig{UsePreset: true, ModemPreset: meshpb.Config_LoRaConfig_LONG_FAST, Region: meshpb.Config_LoRaConfig_EU_868}, time.Minute, 0.5)
	if a.burst >= cost || a.wait(t0, cost) != 0 {
		t.Fatalf("burst %v, cost %v: a full bucket should let it go", a.burst, cost)
	}
	a.spend(t0, cost)
	// From cost-burst in debt back to the burst; the window's rolling budget
	// holds it longer still here, so the bucket is asked alone.
	refill := time.Duration(float64(cost) / a.rate)
	if w := a.bucketWait(t0, cost); w < refill-time.Millisecond || w > refill+time.Millisecond {
		t.Errorf("after a packet larger than the burst the next waits %v, want %v", w, refill)
	}
}
