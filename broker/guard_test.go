package broker

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
)

// openSockets opens n TCP connections that never send CONNECT.
func openSockets(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		conns = append(conns, c)
	}
	return conns
}

// closedByPeer waits until the server has closed c.
func closedByPeer(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF && !isReset(err) {
		t.Fatalf("socket not closed by the broker: %v", err)
	}
}

func isReset(err error) bool { return err != nil && strings.Contains(err.Error(), "connection reset") }

// Sockets that never send CONNECT are closed after the connect timeout, and
// the listener forgets them: 2,000 of them leave nothing behind.
func TestHalfOpenSocketsClosed(t *testing.T) {
	e := startEmbedded(t, Config{Listen: "127.0.0.1:0", ConnectTimeout: 300 * time.Millisecond, MaxConnections: 4096})
	conns := openSockets(t, e.Addr(), 2000)
	for _, c := range conns {
		closedByPeer(t, c)
	}
	testutil.Eventually(t, 20*time.Second, func() bool { return e.tcp.open() == 0 }, "%d sockets still open", e.tcp.open())
}

// Past the cap a new socket is closed at once, and a client connects again
// once places are free.
func TestConnectionCap(t *testing.T) {
	var logs safeLog
	e, err := NewEmbedded(Config{Listen: "127.0.0.1:0", ConnectTimeout: time.Hour, MaxConnections: 20}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	conns := openSockets(t, e.Addr(), 20)
	testutil.Eventually(t, 10*time.Second, func() bool { return e.tcp.open() == 20 }, "%d sockets open", e.tcp.open())
	extra := openSockets(t, e.Addr(), 5)
	for _, c := range extra {
		closedByPeer(t, c)
	}
	if n := strings.Count(logs.String(), "too many MQTT connections"); n != 1 {
		t.Errorf("%d warnings about the cap, want 1:\n%s", n, logs.String())
	}
	for _, c := range conns {
		c.Close()
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return e.tcp.open() == 0 }, "%d sockets open", e.tcp.open())
	c := pahoClient(t, e.Addr(), "", "")
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect after places freed: %v", tok.Error())
	}
	c.Disconnect(0)
}

// Close returns promptly however many sockets are open and silent: shutdown
// never waits on what clients do.
func TestCloseWithSilentSockets(t *testing.T) {
	e, err := NewEmbedded(Config{Listen: "127.0.0.1:0", ConnectTimeout: time.Hour}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	conns := openSockets(t, e.Addr(), 100)
	testutil.Eventually(t, 10*time.Second, func() bool { return e.tcp.open() == 100 }, "%d sockets open", e.tcp.open())
	closed := make(chan struct{})
	go func() { e.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close still waiting on silent sockets after 10 s")
	}
	for _, c := range conns {
		closedByPeer(t, c)
	}
}

func pahoClient(t *testing.T, addr, user, pass string) paho.Client {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(fmt.Sprintf("test-%d", time.Now().UnixNano())).
		SetUsername(user).SetPassword(pass).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second)
	return paho.NewClient(opts)
}

// safeLog is a log destination safe for the broker's goroutines and the test.
type safeLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *safeLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *safeLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// A socket that announces a packet larger than MaxPacketSize is closed
// before the broker allocates it: five bytes from anyone must not make the
// daemon allocate 256 MiB.
func TestHugePacketRefusedBeforeLogin(t *testing.T) {
	e := startEmbedded(t, Config{Listen: "127.0.0.1:0", ConnectTimeout: time.Hour})
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	conns := openSockets(t, e.Addr(), 8)
	for _, c := range conns {
		if _, err := c.Write([]byte{0x10, 0xff, 0xff, 0xff, 0x7f}); err != nil { // CONNECT of 268,435,455 bytes
			t.Fatal(err)
		}
	}
	for _, c := range conns {
		closedByPeer(t, c)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > 64<<20 {
		t.Errorf("8 announced huge packets made the broker allocate %d MiB", grew>>20)
	}
}
