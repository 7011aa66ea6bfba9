package xmppgw

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"

	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
)

// Stanzas written back to back over a real socket, with busy goroutines
// around as in a loaded daemon, must all go through: no write may be hit
// by the deadline meant for an earlier one (see callCtx).
func TestWritesBackToBack(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, _ = io.Copy(io.Discard, c)
		}
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	s, err := xmpp.NewSession(context.Background(), jid.MustParse("localhost"), jid.MustParse("bridge@localhost"), nc, xmpp.Ready,
		xmpp.NewNegotiator(func(*xmpp.Session, *xmpp.StreamConfig) xmpp.StreamConfig { return xmpp.StreamConfig{} }))
	if err != nil {
		t.Fatal(err)
	}
	// Busy goroutines crowd the scheduler, as a loaded daemon's do.
	stop := make(chan struct{})
	var busy sync.WaitGroup
	defer busy.Wait()
	defer close(stop)
	for range 4 {
		busy.Go(func() {
			for {
				select {
				case <-stop:
					return
				//lint:ignore SA5004 spinning is the point: these goroutines load the scheduler
				default:
				}
			}
		})
	}
	c := &conn{s: s}
	m := outMessage{ID: "mesh-a1b2c3d4-00000001", To: "village@conference.localhost", Type: "groupchat", Body: "Ana's T-Beam: text 01"}
	for i := range 30000 {
		if err := c.send(context.Background(), m); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
}
