//go:build integration

package xmpptest

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/ping"
)

const wait = 5 * time.Second

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

// roomChat runs the two-occupant scenario shared by the server tests: join,
// say, see it with ids on both sides, kick, destroy.
func roomChat(t *testing.T, srv *Server) {
	ctx := ctxT(t)
	room := "harness@" + srv.MUCDomain

	alice := Dial(t, srv, "alice", "alice-pw")
	bob := Dial(t, srv, "bob", "bob-pw")
	if alice.JID.Bare().String() != "alice@"+srv.Domain || alice.JID.Resourcepart() == "" {
		t.Fatalf("alice bound as %s", alice.JID)
	}
	if err := alice.Join(ctx, room, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := bob.Join(ctx, room, "bob"); err != nil {
		t.Fatal(err)
	}

	id, err := alice.Say(ctx, room, "hello from alice")
	if err != nil {
		t.Fatal(err)
	}
	got := bob.WaitMessage(t, wait, func(m Message) bool { return m.Body == "hello from alice" })
	if got.Nick != "alice" || got.From != room+"/alice" || got.Room != room {
		t.Errorf("sender: %+v", got)
	}
	if got.ID != id || got.OriginID != id {
		t.Errorf("ids: want id and origin-id %q, got %+v", id, got)
	}
	if got.StanzaID == "" || got.Delayed {
		t.Errorf("want a room stanza-id and no delay: %+v", got)
	}
	refl := alice.WaitMessage(t, wait, func(m Message) bool { return m.OriginID == id })
	if refl.StanzaID != got.StanzaID {
		t.Errorf("reflection stanza-id %q != bob's %q", refl.StanzaID, got.StanzaID)
	}

	// The room creator is owner and can kick.
	if err := alice.Kick(ctx, room, "bob", "testing kicks"); err != nil {
		t.Fatalf("kick: %v", err)
	}
	kicked := bob.WaitPresence(t, wait, func(p Presence) bool { return p.Type == "unavailable" && p.HasCode(307) })
	if !kicked.Self && kicked.Nick != "bob" {
		t.Errorf("kick presence is not about bob: %+v", kicked)
	}
	alice.WaitPresence(t, wait, func(p Presence) bool { return p.Nick == "bob" && p.Type == "unavailable" && p.HasCode(307) })

	// bob's session survives the kick (the mellium muc deadlock is avoided).
	if err := ping.Send(ctx, bob.Session(), jid.MustParse(srv.Domain)); err != nil {
		t.Fatalf("bob's session is wedged after the kick: %v", err)
	}
	if err := bob.Join(ctx, room, "bob"); err != nil {
		t.Fatalf("rejoin after kick: %v", err)
	}

	if err := alice.Destroy(ctx, room, "done"); err != nil {
		t.Fatalf("destroy: %v", err)
	}
	bob.WaitPresence(t, wait, func(p Presence) bool { return p.Type == "unavailable" && p.Destroyed })
}

func TestProsodyRoom(t *testing.T) {
	t0 := time.Now()
	srv := StartProsody(t, WithAccount("alice", "alice-pw"), WithAccount("bob", "bob-pw"))
	t.Logf("prosody start (incl. 2 accounts) took %v", time.Since(t0))
	if _, err := os.Stat(srv.CAFile); err != nil {
		t.Fatal(err)
	}
	roomChat(t, srv)

	// Wrong password is an error, not a hang.
	if _, err := TryDial(t, srv, "alice", "wrong"); err == nil {
		t.Error("login with a wrong password succeeded")
	}
	// Direct TLS (XEP-0368) presents the throwaway cert for the domain.
	conn, err := tls.Dial("tcp", srv.DirectTLSAddr, srv.TLSConfig())
	if err != nil {
		t.Fatalf("direct TLS: %v", err)
	}
	conn.Close()
}

func TestProsodyRestartFreeze(t *testing.T) {
	srv := StartProsody(t, WithAccount("alice", "alice-pw"))
	srv.AddAccount("carol", "carol-pw") // online registration
	ctx := ctxT(t)
	room := "restart@" + srv.MUCDomain

	alice := Dial(t, srv, "alice", "alice-pw")
	if err := alice.Join(ctx, room, "alice"); err != nil {
		t.Fatal(err)
	}

	// Freeze: the link goes silent, a ping times out; Thaw: it answers.
	srv.Freeze()
	pctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err := ping.Send(pctx, alice.Session(), jid.MustParse(srv.Domain))
	cancel()
	if err == nil {
		t.Fatal("ping answered by a frozen server")
	}
	srv.Thaw()
	if err := ping.Send(ctx, alice.Session(), jid.MustParse(srv.Domain)); err != nil {
		t.Fatalf("ping after thaw: %v", err)
	}

	addr := srv.Addr
	t0 := time.Now()
	srv.Stop()
	t.Logf("prosody stop took %v", time.Since(t0))
	select {
	case <-alice.Done():
		t.Logf("alice's session ended: %v", alice.Err())
	case <-time.After(wait):
		t.Fatal("alice's session did not notice the server stop")
	}
	if srv.Running() {
		t.Fatal("Running after Stop")
	}
	t0 = time.Now()
	srv.Start()
	t.Logf("prosody restart took %v", time.Since(t0))
	if srv.Addr != addr {
		t.Fatalf("restart moved the port: %s -> %s", addr, srv.Addr)
	}

	alice = Dial(t, srv, "alice", "alice-pw")
	carol := Dial(t, srv, "carol", "carol-pw")
	if err := alice.Join(ctx, room, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := carol.Join(ctx, room, "carol"); err != nil {
		t.Fatal(err)
	}
	id, err := alice.Say(ctx, room, "after restart")
	if err != nil {
		t.Fatal(err)
	}
	m := carol.WaitMessage(t, wait, func(m Message) bool { return m.ID == id })
	if m.StanzaID == "" {
		t.Errorf("no stanza-id after restart: %+v", m)
	}

	// Kill and start again: still works, accounts survive.
	srv.Kill()
	<-alice.Done()
	srv.Start()
	Dial(t, srv, "carol", "carol-pw")
}

func TestEjabberdRoom(t *testing.T) {
	t0 := time.Now()
	srv := StartEjabberd(t, WithAccount("alice", "alice-pw"), WithAccount("bob", "bob-pw"))
	t.Logf("ejabberd start (incl. 2 accounts) took %v", time.Since(t0))
	if !strings.HasPrefix(srv.Addr, "127.0.0.1:") {
		t.Fatalf("addr %s", srv.Addr)
	}
	roomChat(t, srv)

	t0 = time.Now()
	srv.Stop()
	t.Logf("ejabberd stop took %v", time.Since(t0))
	t0 = time.Now()
	srv.Start()
	t.Logf("ejabberd restart took %v", time.Since(t0))
	c := Dial(t, srv, "alice", "alice-pw")
	if err := c.Join(ctxT(t), "again@"+srv.MUCDomain, "alice"); err != nil {
		t.Fatal(err)
	}

	// SIGKILL right after registering: accounts still work after Start.
	srv.AddAccount("dave", "dave-pw")
	srv.Kill()
	<-c.Done()
	t0 = time.Now()
	srv.Start()
	t.Logf("ejabberd start after kill took %v", time.Since(t0))
	Dial(t, srv, "dave", "dave-pw")
}

// squatPorts makes the first port allocation return a port that another
// listener holds, to exercise the bind-race retry.
func squatPorts(t *testing.T) *int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() { // accept and hang up, like a foreign service
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	calls := new(int)
	orig := pickPorts
	t.Cleanup(func() { pickPorts = orig })
	pickPorts = func(n int) ([]int, error) {
		*calls++
		ports, err := orig(n)
		if err == nil && *calls == 1 {
			ports[0] = l.Addr().(*net.TCPAddr).Port
		}
		return ports, err
	}
	return calls
}

func TestProsodyPortRace(t *testing.T) {
	calls := squatPorts(t)
	srv := StartProsody(t, WithAccount("alice", "alice-pw"))
	if *calls < 2 {
		t.Fatalf("expected a retry after the bind race, got %d port allocations", *calls)
	}
	Dial(t, srv, "alice", "alice-pw")
}
