package meshsim

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
)

// A client that stops reading leaves the peers' chatter blocked in a write
// and the reader blocked in a read. Serve must still stop when ctx ends and
// leave no goroutine behind: synctest fails the test if one is left blocked.
func TestServeStopsItsGoroutines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := Demo()
		cfg.TrafficInterval = 10 * time.Second
		r := New(cfg)
		// Neither end is closed: only Serve can unblock its goroutines.
		radioEnd, clientEnd := net.Pipe()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		served := make(chan error, 1)
		go func() { served <- r.Serve(ctx, radioEnd) }()

		want, err := proto.Marshal(&meshpb.ToRadio{PayloadVariant: &meshpb.ToRadio_WantConfigId{WantConfigId: 7}})
		if err != nil {
			t.Fatal(err)
		}
		f, err := mesh.AppendFrame(nil, want)
		if err != nil {
			t.Fatal(err)
		}
		go func() { _, _ = clientEnd.Write(f) }()
		fr := mesh.NewFrameReader(clientEnd, nil)
		heard := false
		for !heard {
			item, err := fr.Next()
			if err != nil {
				t.Fatal(err)
			}
			var m meshpb.FromRadio
			if item.Frame != nil && proto.Unmarshal(item.Frame, &m) == nil {
				heard = m.GetPacket().GetDecoded().GetPortnum() == meshpb.PortNum_TEXT_MESSAGE_APP
			}
		}
		// The client reads no more: the next packet from a peer blocks.
		time.Sleep(time.Minute)
		synctest.Wait()
		select {
		case err := <-served:
			t.Fatalf("Serve returned before ctx ended: %v", err)
		default:
		}

		cancel()
		if err := <-served; !errors.Is(err, context.Canceled) {
			t.Errorf("Serve = %v, want context.Canceled", err)
		}
	})
}

// The serve function of ListenTCP returns once ctx ends, with the
// connection it served closed.
func TestListenTCPStops(t *testing.T) {
	cfg := Demo()
	cfg.TrafficInterval = 0
	r := New(cfg)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	addr, serve, err := r.ListenTCP(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- serve() }()
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The boot text shows the connection is being served.
	if _, err := io.ReadFull(c, make([]byte, 8)); err != nil {
		t.Fatal(err)
	}

	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("serve = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return after ctx ended")
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Errorf("connection after serve returned: %v, want EOF", err)
	}
}
