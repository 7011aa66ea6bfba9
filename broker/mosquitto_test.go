//go:build integration

package broker

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
)

// Tests of the embedded broker against real mosquitto clients.

// A real mosquitto_sub sees what the inline client publishes, and a real
// mosquitto_pub reaches an inline subscription through the downlink, the
// one topic an anonymous local client may write.
func TestEmbeddedWithMosquittoClients(t *testing.T) {
	testutil.NeedCommand(t, "mosquitto_sub")
	e := startEmbedded(t, Config{Listen: "127.0.0.1:0", IsDownlink: isDownlinkForTest, IsOwn: bridgeTopic})
	host, port := hostPort(t, e.Addr())

	sub := testutil.Start(t, "mosquitto_sub", "-h", host, "-p", port, "-t", "msh/#", "-v")
	testutil.Eventually(t, 10*time.Second, func() bool { return e.subscribers("msh/US/x") > 0 }, "mosquitto_sub never subscribed")
	if err := e.Publish("msh/US/x", []byte("hello"), false); err != nil {
		t.Fatal(err)
	}
	sub.WaitFor(t, 10*time.Second, testutil.Contains("msh/US/x hello"))

	var mu sync.Mutex
	var got []string
	unsub, err := e.Subscribe("msh/+/2/json/mqtt/#", func(topic string, payload []byte) {
		mu.Lock()
		got = append(got, topic+"="+string(payload))
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unsub()
	out, err := exec.Command("mosquitto_pub", "-h", host, "-p", port, "-t", downlink, "-m", "from-pub").CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_pub: %v %s", err, out)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 1 && got[0] == downlink+"=from-pub"
	}, "inline subscriber did not get the mosquitto_pub message")
}

func TestEmbeddedCredentials(t *testing.T) {
	testutil.NeedCommand(t, "mosquitto_pub")
	creds := filepath.Join(t.TempDir(), "mqtt-users.yaml")
	if err := os.WriteFile(creds, []byte("users:\n  homeassistant:\n    password: s3cret-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startEmbedded(t, Config{Listen: "127.0.0.1:0", CredentialsFile: creds})
	host, port := hostPort(t, e.Addr())
	pub := func(args ...string) error {
		return exec.Command("mosquitto_pub", append([]string{"-h", host, "-p", port, "-t", "t", "-m", "m"}, args...)...).Run()
	}
	if err := pub(); err == nil {
		t.Error("anonymous publish accepted with a credentials file set")
	}
	if err := pub("-u", "homeassistant", "-P", "wrong"); err == nil {
		t.Error("wrong password accepted")
	}
	if err := pub("-u", "homeassistant", "-P", "s3cret-pw"); err != nil {
		t.Errorf("right password refused: %v", err)
	}
}

// subscribers counts the network clients subscribed to filter.
func (e *Embedded) subscribers(topic string) int {
	return len(e.srv.Topics.Subscribers(topic).Subscriptions)
}

func hostPort(t *testing.T, addr string) (string, string) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return h, p
}
