//go:build integration

package xmppgw_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// xmppStatuses collects the XMPP side's status records from now on (the
// retained one first), each decoded strictly and by the contract's parser.
type xmppStatuses struct {
	mu   sync.Mutex
	recs []topics.XMPPStatusRecord
}

func watchXMPPStatus(t *testing.T, br *bridge, jid string) *xmppStatuses {
	t.Helper()
	st := &xmppStatuses{}
	unsub, err := br.bus.Subscribe(topics.XMPPStatusFilter, func(topic string, b []byte) {
		if got, ok := topics.XMPPStatusJID(topic); !ok || got != jid {
			t.Errorf("XMPP status on %s", topic)
		}
		var strict topics.XMPPStatusRecord
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		rec, err := topics.ParseXMPPStatus(b)
		if derr := dec.Decode(&strict); err != nil || derr != nil || strict != rec || rec.JID != jid {
			t.Errorf("XMPP status %s: %v %v", b, err, derr)
			return
		}
		st.mu.Lock()
		st.recs = append(st.recs, rec)
		st.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unsub)
	return st
}

func (st *xmppStatuses) all() []topics.XMPPStatusRecord {
	st.mu.Lock()
	defer st.mu.Unlock()
	return append([]topics.XMPPStatusRecord(nil), st.recs...)
}

// waitLatest waits until the latest record is in state with rooms rooms.
func (st *xmppStatuses) waitLatest(t *testing.T, state topics.LinkState, rooms int, what string) topics.XMPPStatusRecord {
	t.Helper()
	var last topics.XMPPStatusRecord
	testutil.Eventually(t, wait, func() bool {
		all := st.all()
		if len(all) == 0 {
			return false
		}
		last = all[len(all)-1]
		return last.State == state && last.Rooms == rooms
	}, "%s: XMPP status records %s", what, fmt.Sprint(st.all()))
	return last
}

// The XMPP side publishes its state on the broker, retained: online with
// the rooms it is in once it has joined them, offline while its server is
// away and when it stops, online again when it is back. Each change is
// published once.
func TestXMPPStatusOnTheBroker(t *testing.T) {
	srv, room, alice := startRoom(t)
	br := startBridge(t, srv, room, nil)
	const jid = "bridge@localhost"
	st := watchXMPPStatus(t, br, jid)
	meshToRoom(t, br, alice, "the bridge is in")
	up := st.waitLatest(t, topics.LinkOnline, 1, "in the room")
	if since, err := time.Parse(time.RFC3339, up.Since); err != nil || time.Since(since) > time.Minute {
		t.Errorf("online since %q (%v)", up.Since, err)
	}

	srv.Stop()
	down := st.waitLatest(t, topics.LinkOffline, 0, "the server stopped")
	if down.Since < up.Since {
		t.Errorf("offline since %s, before online since %s", down.Since, up.Since)
	}
	srv.Start()
	st.waitLatest(t, topics.LinkOnline, 1, "the server back")

	br.stopXMPP(t)
	st.waitLatest(t, topics.LinkOffline, 0, "the XMPP side stopped")
	all := st.all()
	for i := 1; i < len(all); i++ {
		if all[i].State == all[i-1].State && all[i].Rooms == all[i-1].Rooms {
			t.Errorf("the same state published twice in a row: %v", all)
		}
	}
}
