package serialgw_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/broker"
	"github.com/jshiffer/lora-xmpp-bridge/internal/meshsim"
	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/serialgw"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

const wait = 20 * time.Second

func testLog(t *testing.T) *slog.Logger {
	if os.Getenv("TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// transport connects a simulated radio to the bridge over a real byte
// stream, and can pull the plug and plug it back in.
type transport struct {
	name  string
	start func(t *testing.T, ctx context.Context, radio *meshsim.Radio) (dev serialgw.Device, replug func())
}

// ptyTransport serves the radio on the master side of a real
// pseudo-terminal; the bridge opens the slave through a stable symlink, the
// way /dev/serial/by-id/ names a USB radio. Replugging closes the pair and
// points the symlink at a fresh one.
var ptyTransport = transport{"pty", func(t *testing.T, ctx context.Context, radio *meshsim.Radio) (serialgw.Device, func()) {
	link := filepath.Join(t.TempDir(), "ttyUSB-radio")
	var master, slave *os.File
	plug := func() {
		m, s, err := pty.Open()
		if err != nil {
			t.Fatal(err)
		}
		testutil.MakeRaw(t, s)
		tmp := link + ".new"
		os.Remove(tmp)
		if err := os.Symlink(s.Name(), tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, link); err != nil {
			t.Fatal(err)
		}
		master, slave = m, s
		go radio.Serve(ctx, m)
	}
	unplug := func() {
		master.Close()
		slave.Close()
	}
	plug()
	t.Cleanup(unplug)
	return serialgw.Device{Kind: "serial", Addr: link}, func() { unplug(); plug() }
}}

// tcpTransport serves the radio like the firmware's port 4403. Replugging
// drops the connection; the bridge dials again.
var tcpTransport = transport{"tcp", func(t *testing.T, ctx context.Context, radio *meshsim.Radio) (serialgw.Device, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
			go func() { radio.Serve(ctx, c); c.Close() }()
		}
	}()
	var current net.Conn
	t.Cleanup(func() { ln.Close() })
	return serialgw.Device{Kind: "tcp", Addr: ln.Addr().String()}, func() {
		if current == nil {
			current = <-conns
		}
		current.Close()
		current = <-conns
	}
}}

type rig struct {
	radio  *meshsim.Radio
	broker *broker.Embedded
	gw     *serialgw.Gateway
	replug func()
	host   string
	port   string
}

func startRig(t *testing.T, tr transport, tune func(*serialgw.Config), tuneSim ...func(*meshsim.Config)) *rig {
	t.Helper()
	r := launchRig(t, tr, tune, nil, tuneSim...)
	// The radio is ready as soon as it has sent its config; the gateway is
	// up once it has also subscribed what depends on that config.
	testutil.Eventually(t, wait, func() bool { return r.radio.Ready() && r.gw.Up() }, "bridge never completed the handshake")
	return r
}

// launchRig starts a rig without waiting for the handshake; prep, if set,
// sees the radio before the bridge first connects to it.
func launchRig(t *testing.T, tr transport, tune func(*serialgw.Config), prep func(*meshsim.Radio), tuneSim ...func(*meshsim.Config)) *rig {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	simCfg := meshsim.Demo()
	simCfg.TrafficInterval = 0 // tests inject what they need
	for _, f := range tuneSim {
		f(&simCfg)
	}
	radio := meshsim.New(simCfg)
	if prep != nil {
		prep(radio)
	}
	dev, replug := tr.start(t, ctx, radio)
	// Local tools log in as "tool" (read everything, write the downlink);
	// "gateway" stands for another Meshtastic gateway feeding envelopes in.
	users := filepath.Join(t.TempDir(), "mqtt-users.yaml")
	if err := os.WriteFile(users, []byte("users:\n  tool:\n    password: tool-pw\n  gateway:\n    password: gw-pw\n    write: ['msh/#']\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := broker.NewEmbedded(broker.Config{Listen: "127.0.0.1:0", CredentialsFile: users, IsDownlink: topics.IsJSONDownlink, IsOwn: topics.IsBridgeTopic}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	cfg := serialgw.Config{
		Device: dev, Encrypt: true, StateDir: t.TempDir(),
		TextInterval: 2100 * time.Millisecond, HeartbeatInterval: 2 * time.Second, ReplyTimeout: 2 * time.Second,
		HandshakeTimeout: 5 * time.Second, BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
	}
	if tune != nil {
		tune(&cfg)
	}
	gw, err := serialgw.New(cfg, b, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- gw.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway Run: %v", err)
		}
		b.Close()
	})
	host, port, _ := net.SplitHostPort(b.Addr())
	return &rig{radio: radio, broker: b, gw: gw, replug: replug, host: host, port: port}
}

func each(t *testing.T, f func(t *testing.T, tr transport)) {
	for _, tr := range []transport{ptyTransport, tcpTransport} {
		t.Run(tr.name, func(t *testing.T) { f(t, tr) })
	}
}

// Noise on the line (console text, garbage, a frame that does not decode, a
// header announcing an oversize frame) changes nothing: the packets around
// it arrive, each once.
func TestNoiseBetweenFrames(t *testing.T) {
	each(t, func(t *testing.T, tr transport) {
		r := startRig(t, tr, nil)
		var got []string
		unsub, _ := r.broker.Subscribe(topics.MeshRX, func(_ string, b []byte) {
			var env meshpb.ServiceEnvelope
			proto.Unmarshal(b, &env)
			got = append(got, string(env.GetPacket().GetDecoded().GetPayload()))
		})
		defer unsub()
		junk := [][]byte{
			[]byte("DEBUG | 12:00:01 [Router] Rx packet\r\n"),
			{0x00, 0xff, 0x13, 0x37, 0xc3},
			{0x94, 0xc3, 0x00, 0x03, 0xff, 0xff, 0xff}, // does not decode
			{0x94, 0xc3, 0x7f, 0xff},                   // announces 32767 bytes
			[]byte("[D][WiFiGeneric.cpp:1035] _eventCallback(): Event: 0\n"),
		}
		for i, j := range junk {
			r.radio.Inject(r.radio.TextPacket(0x13572468, "before "+string(rune('a'+i))))
			r.radio.WriteRaw(j)
		}
		r.radio.Inject(r.radio.TextPacket(0x13572468, "after"))
		testutil.Eventually(t, wait, func() bool { return r.gw.Stats.PacketsPublished.Load() == 6 }, "published %d", r.gw.Stats.PacketsPublished.Load())
		if strings.Join(got, ",") != "before a,before b,before c,before d,before e,after" {
			t.Errorf("packets = %q", got)
		}
		if r.gw.Stats.FramesRejected.Load() == 0 || r.gw.Stats.FramesOversize.Load() == 0 {
			t.Errorf("noise not counted: rejected %d oversize %d", r.gw.Stats.FramesRejected.Load(), r.gw.Stats.FramesOversize.Load())
		}
		if !r.radio.Ready() || r.radio.Handshakes() != 1 {
			t.Errorf("noise disturbed the link: handshakes %d", r.radio.Handshakes())
		}
	})
}

// Pulling the plug and plugging it back leads to a fresh handshake, and
// what was queued meanwhile goes out afterwards, in order.
func TestReplugRehandshakes(t *testing.T) {
	each(t, func(t *testing.T, tr transport) {
		r := startRig(t, tr, nil)
		r.replug()
		testutil.Eventually(t, wait, func() bool { return r.radio.Handshakes() == 2 && r.radio.Ready() }, "handshakes = %d", r.radio.Handshakes())
		if r.gw.Stats.Reconnects.Load() != 1 {
			t.Errorf("reconnects = %d", r.gw.Stats.Reconnects.Load())
		}
		// Packets the radio replays after the handshake are not new.
		pkt := r.radio.TextPacket(0xa1b2c3d4, "once")
		r.radio.Inject(pkt)
		r.replug()
		testutil.Eventually(t, wait, func() bool { return r.radio.Handshakes() == 3 && r.radio.Ready() }, "handshakes = %d", r.radio.Handshakes())
		r.radio.Inject(pkt)
		testutil.Eventually(t, wait, func() bool { return r.gw.Stats.Duplicates.Load() == 1 }, "replayed packet not recognised")
		if n := r.gw.Stats.PacketsPublished.Load(); n != 1 {
			t.Errorf("published %d, want 1", n)
		}
	})
}

// A radio that reboots announces it; the bridge handshakes again.
func TestRebootRehandshakes(t *testing.T) {
	r := startRig(t, tcpTransport, nil)
	r.radio.Reboot()
	testutil.Eventually(t, wait, func() bool { return r.radio.Handshakes() == 2 && r.radio.Ready() }, "handshakes = %d", r.radio.Handshakes())
}
