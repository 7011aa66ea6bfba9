//go:build integration

package hass

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"mellium.im/xmpp/jid"

	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
	"github.com/jshiffer/lora-xmpp-bridge/internal/xmpptest"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
	"github.com/jshiffer/lora-xmpp-bridge/xmppgw"
)

// The real XMPP side, logged in to a real server, appears in Home
// Assistant as a device of its own: "XMPP connected" renders ON, with the
// one room it is in, while it is connected, and OFF once it has stopped.
func TestXMPPSideAnnounced(t *testing.T) {
	r := startRig(t, nil)
	srv := xmpptest.StartProsody(t, xmpptest.WithAccount("bridge", "bridge-pw"))
	room := jid.MustParse("village@" + srv.MUCDomain)
	const account = "bridge@localhost"
	node := xmppDeviceID(account)
	w := r.subscribe(t, DefaultPrefix+"/+/"+node+"/#", topics.XMPPStatus(account))

	xg, err := xmppgw.New(xmppgw.Config{
		JID: jid.MustParse(account), Password: "bridge-pw", Server: srv.Addr, RootCAs: srv.RootCAs(),
		Rooms:        []xmppgw.Room{{JID: room, Nick: "meshbridge"}},
		PingInterval: time.Second, PingTimeout: 2 * time.Second, SelfPingInterval: 2 * time.Second,
		RejoinDelay: 200 * time.Millisecond, BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
	}, r.broker, testLog())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- xg.Run(ctx) }()
	stop := func() {
		if cancel != nil {
			cancel()
			cancel = nil
			if err := <-done; err != nil {
				t.Errorf("XMPP side Run: %v", err)
			}
		}
	}
	t.Cleanup(stop)

	connected := w.waitLatest(t, configTopic(componentBinarySensor, node, "connected"), nonEmpty, "the XMPP side's device")
	rooms := w.waitLatest(t, configTopic(componentSensor, node, "rooms"), nonEmpty, "the XMPP side's rooms")
	for _, topic := range []string{configTopic(componentBinarySensor, node, "connected"), configTopic(componentSensor, node, "rooms"),
		configTopic(componentSensor, node, "since")} {
		p := w.waitLatest(t, topic, nonEmpty, "the XMPP side's entities")
		for _, err := range validateDiscovery(DefaultPrefix, topic, []byte(p)) {
			t.Error(err)
		}
	}
	renders := func(config string) string {
		var cfg map[string]any
		json.Unmarshal([]byte(config), &cfg)
		status, _ := w.latest(topics.XMPPStatus(account))
		res := renderJinja(t, []jinjaJob{{Template: cfg["value_template"].(string), Payload: &status}})
		return res[0].Result + res[0].Error
	}
	testutil.Eventually(t, wait, func() bool { return renders(connected) == "ON" && renders(rooms) == "1" },
		"with the XMPP side in its room: connected %q, rooms %q", renders(connected), renders(rooms))

	stop()
	testutil.Eventually(t, wait, func() bool { return renders(connected) == "OFF" && renders(rooms) == "0" },
		"with the XMPP side stopped: connected %q, rooms %q", renders(connected), renders(rooms))
	// Stopped is not gone: the device stays, showing it.
	if p, _ := w.latest(configTopic(componentBinarySensor, node, "connected")); p == "" {
		t.Error("the XMPP side's device was removed when it stopped")
	}
}
