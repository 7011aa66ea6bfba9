package xmppgw

import (
	"strings"
	"testing"
	"time"

	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
)

// A person gets burst messages in a row, then one per interval; the wait
// they are told is until the next.
func TestDirectRate(t *testing.T) {
	d := newDirects()
	now := time.Unix(1_000_000, 0)
	steps := []struct {
		after time.Duration
		ok    bool
		wait  time.Duration
	}{
		{0, true, 0}, {0, true, 0}, {0, true, 0},
		{0, false, 30 * time.Second},
		{10 * time.Second, false, 20 * time.Second},
		{20 * time.Second, true, 0},
		{0, false, 30 * time.Second},
		{2 * time.Minute, true, 0}, {0, true, 0}, {0, true, 0}, {0, false, 30 * time.Second}, // refilled, up to the burst
	}
	for i, s := range steps {
		now = now.Add(s.after)
		wait, ok := d.allow("alice@example.org", now, 3, 30*time.Second)
		if ok != s.ok || wait.Round(time.Millisecond) != s.wait {
			t.Errorf("step %d: ok %v wait %v; want %v %v", i, ok, wait, s.ok, s.wait)
		}
	}
	if _, ok := d.allow("bob@example.org", now, 3, 30*time.Second); !ok {
		t.Error("one person's limit held another back")
	}
}

// Each refusal the mesh can give is told in words a person understands.
func TestWhyNotDelivered(t *testing.T) {
	n := nodeName{num: 0xa1b2c3d4, short: "ANA"}
	for reason, want := range map[meshpb.Routing_Error]string{
		meshpb.Routing_MAX_RETRANSMIT:      "ANA may be switched off or out of range",
		meshpb.Routing_NO_ROUTE:            "no way to ANA",
		meshpb.Routing_PKI_UNKNOWN_PUBKEY:  "does not have ANA's key yet",
		meshpb.Routing_DUTY_CYCLE_LIMIT:    "duty cycle",
		meshpb.Routing_RATE_LIMIT_EXCEEDED: "rate limit",
	} {
		if got := whyNotDelivered(reason, n); !strings.Contains(got, want) {
			t.Errorf("%v: %q, want %q in it", reason, got, want)
		}
	}
}
