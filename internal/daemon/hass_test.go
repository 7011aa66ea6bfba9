//go:build integration

package daemon

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
)

// The daemon with --hass and the simulated radio, as Home Assistant sees
// it through a real mosquitto client: Home Assistant logs in as it does by
// default (its will on homeassistant/status), finds the bridge and the
// nodes of the radio's node database announced, and may announce its own
// start; neither it nor any local tool may write the discovery configs or
// the bridge's topics. What was announced is kept in the state directory.
func TestHassDaemon(t *testing.T) {
	testutil.NeedCommand(t, "mosquitto_sub")
	pubPath := testutil.NeedCommand(t, "mosquitto_pub")
	dir := t.TempDir()
	c, err := Parse([]string{"--device", "sim", "--hass", "--mqtt-listen", "127.0.0.1:0", "--state-dir", dir}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	infos := make(chan Info, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, c, slog.New(slog.NewTextHandler(io.Discard, nil)), func(i Info) { infos <- i })
	}()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}
	t.Cleanup(stop)
	var info Info
	select {
	case info = <-infos:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	host, port, _ := net.SplitHostPort(info.MQTTAddr)

	ha := testutil.Start(t, "mosquitto_sub", "-h", host, "-p", port, "--will-topic", "homeassistant/status", "--will-payload", "offline",
		"-F", "%t %p", "-t", "homeassistant/#", "-t", "sovereign/hass/#")
	for _, want := range []string{
		"homeassistant/binary_sensor/sovereign_bridge_5eed0001/link/config {",
		"homeassistant/text/sovereign_bridge_5eed0001/send_ch0/config {",
		"homeassistant/sensor/sovereign_a1b2c3d4/last_heard/config {",
		"sovereign/hass/node/!a1b2c3d4/state {",
		"sovereign/hass/availability online",
	} {
		ha.WaitFor(t, 30*time.Second, testutil.Contains(want))
	}

	pub := func(topic string) error {
		// QoS 1 over MQTT 3.1.1: a refused publish closes the connection,
		// and mosquitto_pub fails.
		return exec.Command(pubPath, "-h", host, "-p", port, "-q", "1", "-t", topic, "-m", "forged").Run()
	}
	if err := exec.Command(pubPath, "-h", host, "-p", port, "-q", "1", "-t", "homeassistant/status", "-m", "online").Run(); err != nil {
		t.Errorf("Home Assistant's start refused: %v", err)
	}
	for _, topic := range []string{
		"homeassistant/sensor/sovereign_a1b2c3d4/battery/config", "sovereign/hass/availability", "sovereign/hass/node/!a1b2c3d4/state",
	} {
		if err := pub(topic); err == nil {
			t.Errorf("a local tool wrote %s", topic)
		}
	}

	stop()
	b, err := os.ReadFile(filepath.Join(dir, "sim", "hass.json"))
	if err != nil || !strings.Contains(string(b), "homeassistant/sensor/sovereign_a1b2c3d4/last_heard/config") {
		t.Errorf("hass.json: %v %.300s", err, b)
	}
}
