package broker

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
)

// connectWithWill opens a socket, sends an MQTT 3.1.1 CONNECT whose will
// is (topic, payload, retained) and returns the socket and the CONNACK's
// return code.
func connectWithWill(t *testing.T, addr, user, pass, topic, payload string) (net.Conn, byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 4,
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: "will-" + user,
			WillFlag: true, WillTopic: topic, WillPayload: []byte(payload), WillRetain: true,
			UsernameFlag: user != "", Username: []byte(user), PasswordFlag: pass != "", Password: []byte(pass),
		},
	}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 4)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(ack); err != nil {
		t.Fatalf("no CONNACK: %v", err)
	}
	return c, ack[3]
}

// The broker sends a will without checking the access rules, so a login
// whose will the client could not publish itself is refused: no client can
// forge (and retain) the bridge's own topics by dropping its connection.
// A will on a topic the client may write still works.
func TestWillObeysAccessRules(t *testing.T) {
	creds := filepath.Join(t.TempDir(), "users.yaml")
	if err := os.WriteFile(creds, []byte("users:\n  reader:\n    password: pw\n    read: ['msh/#']\n    write: []\n  ha:\n    password: pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, creds, user, topic string
		allowed                  bool
	}{
		{"anonymous, bridge topic", "", "", "sovereign/bridge/status", false},
		{"read-only user, bridge topic", creds, "reader", "sovereign/mesh/tx", false},
		{"read-only user, downlink", creds, "reader", downlink, false},
		{"user, downlink", creds, "ha", downlink, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startEmbedded(t, Config{Listen: "127.0.0.1:0", CredentialsFile: tc.creds, IsDownlink: isDownlinkForTest, IsOwn: bridgeTopic})
			var box inbox
			for _, f := range []string{"sovereign/#", downlink} {
				if _, err := e.Subscribe(f, box.handler); err != nil {
					t.Fatal(err)
				}
			}
			pass := ""
			if tc.user != "" {
				pass = "pw"
			}
			c, code := connectWithWill(t, e.Addr(), tc.user, pass, tc.topic, "will")
			if tc.allowed != (code == 0) {
				t.Fatalf("CONNACK code %d; want accepted=%v", code, tc.allowed)
			}
			c.Close() // no DISCONNECT: a registered will is sent now
			if tc.allowed {
				testutil.Eventually(t, 10*time.Second, func() bool { return len(box.all()) == 1 }, "allowed will not delivered")
				return
			}
			var late inbox
			if _, err := e.Subscribe("sovereign/#", late.handler); err != nil {
				t.Fatal(err)
			}
			if got := append(box.all(), late.all()...); len(got) != 0 {
				t.Errorf("refused login's will was delivered or retained: %q", got)
			}
		})
	}
}

// A good login does not forgive an address's failed guesses: holding one
// valid account does not make guessing another one cheap.
func TestThrottleNotResetByAnotherAccount(t *testing.T) {
	creds := filepath.Join(t.TempDir(), "users.yaml")
	if err := os.WriteFile(creds, []byte("users:\n  me:\n    password: mine\n  admin:\n    password: secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startEmbedded(t, Config{Listen: "127.0.0.1:0", CredentialsFile: creds})
	login := func(user, pass string) error {
		opts := paho.NewClientOptions().AddBroker("tcp://" + e.Addr()).SetClientID(fmt.Sprintf("t-%d", time.Now().UnixNano())).
			SetUsername(user).SetPassword(pass).SetAutoReconnect(false).SetProtocolVersion(4)
		c := paho.NewClient(opts)
		tok := c.Connect()
		tok.WaitTimeout(10 * time.Second)
		if tok.Error() == nil {
			c.Disconnect(0)
		}
		return tok.Error()
	}
	guesses := 0
	for range 10 {
		for range freeFailures - 1 {
			_ = login("admin", "guess")
			guesses++
		}
		_ = login("me", "mine")
	}
	if err := login("admin", "secret"); err == nil {
		t.Errorf("after %d wrong guesses from one address, interleaved with good logins of another account, the right password is accepted at once", guesses)
	}
}
