package serialgw

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/broker"
	"github.com/jshiffer/lora-xmpp-bridge/internal/meshsim"
	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
)

// benchPool is how many distinct packets the benchmarks cycle through. It is
// more than twice the dedupe window (4096 entries), so by the time a packet
// comes round again its (from, id) has been evicted and it is processed in
// full; BenchmarkUplink checks that no packet was counted as a duplicate.
const benchPool = 8192

// benchStream is benchPool framed FromRadio packets back to back, as a radio
// would write them: texts, positions and telemetry from 16 nodes, each with
// its own id. ends[i] is the offset just past frame i.
type benchStream struct {
	buf  []byte
	ends []int
}

func newBenchStream(tb testing.TB) *benchStream {
	tb.Helper()
	now := uint32(time.Now().Unix())
	texts := []string{"Good morning from the ridge 🌄", "Water pump is running again", "Anyone heading to the market?", "On my way 🚲", "谢谢 — see you at six"}
	st := &benchStream{ends: make([]int, 0, benchPool)}
	for i := range benchPool {
		from := 0xa1b20000 + uint32(i%16)
		var port meshpb.PortNum
		var payload []byte
		switch i % 3 {
		case 0:
			port, payload = meshpb.PortNum_TEXT_MESSAGE_APP, []byte(fmt.Sprintf("%s #%d", texts[i%len(texts)], i))
		case 1:
			port = meshpb.PortNum_POSITION_APP
			payload, _ = proto.Marshal(&meshpb.Position{
				LatitudeI: proto.Int32(515000000 + int32(i)), LongitudeI: proto.Int32(-1000000 - int32(i)),
				Altitude: proto.Int32(42), Time: now, SatsInView: 7, PrecisionBits: 32,
			})
		default:
			port = meshpb.PortNum_TELEMETRY_APP
			payload, _ = proto.Marshal(&meshpb.Telemetry{Time: now, Variant: &meshpb.Telemetry_DeviceMetrics{DeviceMetrics: &meshpb.DeviceMetrics{
				BatteryLevel: proto.Uint32(uint32(60 + i%40)), Voltage: proto.Float32(3.9), ChannelUtilization: proto.Float32(4.5),
				AirUtilTx: proto.Float32(0.8), UptimeSeconds: proto.Uint32(uint32(3600 + i)),
			}}})
		}
		pkt := &meshpb.MeshPacket{
			From: from, To: mesh.Broadcast, Id: uint32(i + 1), RxTime: proto.Uint32(now),
			RxSnr: 5.5, RxRssi: proto.Int32(-92), HopLimit: 2, HopStart: 3,
			PayloadVariant: &meshpb.MeshPacket_Decoded{Decoded: &meshpb.Data{Portnum: port, Payload: payload, Bitfield: proto.Uint32(1)}},
		}
		b, err := proto.Marshal(&meshpb.FromRadio{PayloadVariant: &meshpb.FromRadio_Packet{Packet: pkt}})
		if err != nil {
			tb.Fatal(err)
		}
		if st.buf, err = mesh.AppendFrame(st.buf, b); err != nil {
			tb.Fatal(err)
		}
		st.ends = append(st.ends, len(st.buf))
	}
	return st
}

// frames returns the first n (at most benchPool) frames of the stream.
func (st *benchStream) frames(n int) []byte { return st.buf[:st.ends[n-1]] }

// BenchmarkUplink measures the whole uplink path, one op per frame: stream
// bytes from the simulated radio over an in-memory pipe, through the
// session's frame reader and protobuf decode, dedupe, node learning, envelope
// encryption and JSON, to the publishes on an embedded broker, where an
// inline subscriber on msh/# counts them. The handshake is done by the
// simulator beforehand, outside the timer; the frames are pre-encoded and
// written raw, so the timed work on the radio's side is one pipe write per
// 8192 frames.
func BenchmarkUplink(b *testing.B) {
	st := newBenchStream(b)
	log := slog.New(slog.DiscardHandler)

	bk, err := broker.NewEmbedded(broker.Config{Listen: broker.Off}, log)
	if err != nil {
		b.Fatal(err)
	}
	if err := bk.Start(); err != nil {
		b.Fatal(err)
	}
	defer bk.Close()

	// Two publishes per packet reach msh/#: the (encrypted) envelope and the JSON.
	const perFrame = 2
	var got, jsonGot atomic.Int64
	want := int64(b.N) * perFrame
	done := make(chan struct{})
	unsub, err := bk.Subscribe("msh/#", func(topic string, _ []byte) {
		if strings.Contains(topic, "/json/") {
			jsonGot.Add(1)
		}
		if got.Add(1) == want {
			close(done)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer unsub()

	g, err := New(Config{Device: Device{Kind: "tcp", Addr: "pipe"}, Encrypt: true}, bk, log)
	if err != nil {
		b.Fatal(err)
	}
	simCfg := meshsim.Demo()
	simCfg.TrafficInterval = 0
	radio := meshsim.New(simCfg)

	ctx, cancel := context.WithCancel(context.Background())
	gwEnd, radioEnd := net.Pipe()
	go func() { _ = radio.Serve(ctx, radioEnd) }()
	s := newSession(g, gwEnd, "pipe")
	runDone := make(chan struct{})
	go func() { defer close(runDone); _ = s.run(ctx) }()
	defer func() {
		cancel()
		<-runDone
		radioEnd.Close()
	}()

	deadline := time.Now().Add(10 * time.Second)
	for r, _ := g.currentRadio(); r == nil; r, _ = g.currentRadio() {
		if time.Now().After(deadline) {
			b.Fatal("no handshake with the simulated radio within 10 s")
		}
		select {
		case <-radio.Changed():
		case <-time.After(5 * time.Millisecond):
		}
	}

	b.ReportAllocs()
	b.SetBytes(int64(len(st.buf) / benchPool))
	b.ResetTimer()
	go func() {
		for left := b.N; left > 0; {
			n := min(left, benchPool)
			if !radio.WriteRaw(st.frames(n)) {
				return
			}
			left -= n
		}
	}()
	select {
	case <-done:
	case <-time.After(time.Duration(b.N)*time.Millisecond + 30*time.Second):
		b.Fatalf("%d of %d publishes after the deadline; frames in %d, packets %d, duplicates %d",
			got.Load(), want, g.Stats.FramesIn.Load(), g.Stats.PacketsIn.Load(), g.Stats.Duplicates.Load())
	}
	b.StopTimer()

	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frames/s")
	if d := g.Stats.Duplicates.Load(); d != 0 {
		b.Fatalf("%d packets dropped as duplicates: the benchmark would not measure the full path", d)
	}
	if j := jsonGot.Load(); j != int64(b.N) {
		b.Fatalf("%d JSON publishes for %d frames", j, b.N)
	}
}

// cycleReader reads buf over and over.
type cycleReader struct {
	buf []byte
	off int
}

func (c *cycleReader) Read(p []byte) (int, error) {
	n := copy(p, c.buf[c.off:])
	c.off = (c.off + n) % len(c.buf)
	return n, nil
}

// BenchmarkFrameReader measures the stream framing alone (mesh.FrameReader
// over bytes in memory), and with the FromRadio decode the session runs as
// its validator. One op is one frame.
func BenchmarkFrameReader(b *testing.B) {
	st := newBenchStream(b)
	run := func(b *testing.B, valid func([]byte) bool) {
		fr := mesh.NewFrameReader(&cycleReader{buf: st.buf}, valid)
		b.ReportAllocs()
		b.SetBytes(int64(len(st.buf) / benchPool))
		b.ResetTimer()
		for range b.N {
			item, err := fr.Next()
			if err != nil || item.Frame == nil {
				b.Fatalf("item %+v, err %v", item, err)
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frames/s")
		if s := fr.Stats(); s.Rejected != 0 || s.Oversize != 0 || s.LogLines != 0 {
			b.Fatalf("stats %+v", s)
		}
	}
	b.Run("framing", func(b *testing.B) { run(b, nil) })
	b.Run("framing+decode", func(b *testing.B) {
		run(b, func(p []byte) bool {
			m := new(meshpb.FromRadio)
			return proto.Unmarshal(p, m) == nil && m.GetPayloadVariant() != nil
		})
	})
}
