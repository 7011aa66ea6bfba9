package broker

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
)

const downlink = "msh/EU_868/2/json/mqtt/"

// inbox records what inline subscriptions receive.
type inbox struct {
	mu  sync.Mutex
	got []string
}

func (b *inbox) handler(topic string, payload []byte) {
	b.mu.Lock()
	b.got = append(b.got, topic+" "+string(payload))
	b.mu.Unlock()
}

func (b *inbox) all() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.got...)
}

// A network client, anonymous or logged in, cannot write the bridge's own
// topics: forged packets, results, node records and a retained status
// reach no inline subscriber and are not retained. The downlink still works,
// and a message sent after the forged ones on the same connection shows
// that they were processed (and dropped).
func TestForgedBridgeTopicsRefused(t *testing.T) {
	creds := filepath.Join(t.TempDir(), "users.yaml")
	if err := os.WriteFile(creds, []byte("users:\n  ha:\n    password: ha-pw\n  gw:\n    password: gw-pw\n    write: ['#']\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, creds, user, pass string
	}{
		{"anonymous", "", "", ""},
		{"credentialed", creds, "ha", "ha-pw"},
		{"catch-all write rule", creds, "gw", "gw-pw"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startEmbedded(t, Config{Listen: "127.0.0.1:0", CredentialsFile: tc.creds, IsDownlink: isDownlinkForTest, IsOwn: bridgeTopic})
			var box inbox
			for _, f := range []string{"sovereign/#", downlink} {
				if _, err := e.Subscribe(f, box.handler); err != nil {
					t.Fatal(err)
				}
			}
			c := pahoClient(t, e.Addr(), tc.user, tc.pass)
			if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("connect: %v", tok.Error())
			}
			defer c.Disconnect(0)
			for _, topic := range []string{"sovereign/mesh/rx", "sovereign/mesh/tx", "sovereign/mesh/tx/!5eed0001", "sovereign/mesh/result", "sovereign/json/result", "sovereign/mesh/nodes/!a1b2c3d4", "sovereign/bridge/status/!5eed0001"} {
				c.Publish(topic, 0, true, "forged").WaitTimeout(5 * time.Second)
			}
			c.Publish(downlink, 0, false, "marker").WaitTimeout(5 * time.Second)
			testutil.Eventually(t, 10*time.Second, func() bool { return len(box.all()) > 0 }, "the downlink marker never arrived")
			if got := box.all(); len(got) != 1 || got[0] != downlink+" marker" {
				t.Errorf("inline subscribers got %q, want only the marker", got)
			}
			var late inbox
			if _, err := e.Subscribe("sovereign/#", late.handler); err != nil {
				t.Fatal(err)
			}
			if got := late.all(); len(got) != 0 {
				t.Errorf("forged messages were retained: %q", got)
			}
		})
	}
}

// Failed logins are throttled per address: after a few, even the right
// password is refused for a while, and the log names the user and the
// address once per burst instead of once per guess.
func TestLoginThrottled(t *testing.T) {
	creds := filepath.Join(t.TempDir(), "users.yaml")
	if err := os.WriteFile(creds, []byte("users:\n  ha:\n    password: right\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs safeLog
	e, err := NewEmbedded(Config{Listen: "127.0.0.1:0", CredentialsFile: creds}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	login := func(pass string) error {
		c := pahoClient(t, e.Addr(), "ha", pass)
		tok := c.Connect()
		tok.WaitTimeout(10 * time.Second)
		if tok.Error() == nil {
			c.Disconnect(0)
		}
		return tok.Error()
	}
	for i := range 30 {
		if login("guess") == nil {
			t.Fatalf("guess %d accepted", i)
		}
	}
	if login("right") == nil {
		t.Error("right password accepted straight after 30 failed guesses from the same address")
	}
	log := logs.String()
	if n := strings.Count(log, "level=WARN"); n < 2 || n > 4 {
		t.Errorf("%d warnings for 30 guesses, want a few:\n%s", n, log)
	}
	if !strings.Contains(log, "user=ha") || !strings.Contains(log, "remote=127.0.0.1") {
		t.Errorf("the log does not name the user and the address:\n%s", log)
	}
	if strings.Contains(log, `msg=""`) || strings.Contains(log, "guess") || strings.Contains(log, "right") {
		t.Errorf("empty message or a password in the log:\n%s", log)
	}
	if login("right") == nil {
		t.Error("right password accepted while the address is locked out")
	}
}
