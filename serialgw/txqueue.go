package serialgw

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"sync"
	"time"

	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
)

// maxPayload is the firmware's Data.payload limit.
const maxPayload = 233

// request is one packet waiting to go out on the mesh.
type request struct {
	id      uint32 // the originator's id, echoed in results
	origin  string // who asked (the envelope's gateway_id), echoed in results
	to      uint32
	channel uint32 // local channel index
	chName  string // a channel name still to resolve, when no radio was known yet
	// downlink is a JSON downlink still to parse, when no radio was known
	// yet (its node number is needed), and root the topic root it came on,
	// checked against the radio's when it goes out; data is nil until then.
	downlink []byte
	root     string
	data     *meshpb.Data
	queued   time.Time
	// wireID is the packet id on the mesh, set at the first attempt and kept
	// for a resend, so a packet the radio took before the link dropped is
	// recognised (by the firmware and by every node) as the same packet.
	wireID uint32
	seq    uint64 // in the spool; 0 when not spooled
	// dl is set for a JSON downlink: what its JSON results need.
	dl *downlinkState
}

// wantAck reports whether the packet asks its destination for an
// acknowledgement: a direct message, whose sender is told when it arrives
// (a JSON downlink's in its results, an XMPP user's by a receipt).
func (r *request) wantAck() bool {
	if r.dl != nil {
		return r.dl.wantAck
	}
	return r.to != 0 && r.to != mesh.Broadcast
}

var errQueueFull = errors.New("transmit queue full")

// txQueue is the radio link's one ordered transmit queue. It outlives
// sessions, so what waits while the radio is away goes out after the next
// handshake, in order.
type txQueue struct {
	mu    sync.Mutex
	items []*request
	limit int
	ready chan struct{} // has a value when items may have changed
}

func newTxQueue(limit int) *txQueue {
	return &txQueue{limit: limit, ready: make(chan struct{}, 1)}
}

func (q *txQueue) notify() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

func (q *txQueue) push(r *request) error {
	q.mu.Lock()
	if len(q.items) >= q.limit {
		q.mu.Unlock()
		return errQueueFull
	}
	q.items = append(q.items, r)
	q.mu.Unlock()
	q.notify()
	return nil
}

// restore appends a request from the spool, ignoring the limit: it was
// accepted before.
func (q *txQueue) restore(r *request) {
	q.mu.Lock()
	q.items = append(q.items, r)
	q.mu.Unlock()
	q.notify()
}

// pushFront puts back a request whose send did not complete.
func (q *txQueue) pushFront(r *request) {
	q.mu.Lock()
	q.items = append([]*request{r}, q.items...)
	q.mu.Unlock()
	q.notify()
}

func (q *txQueue) peek() *request {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return nil
	}
	return q.items[0]
}

// pop removes r, which peek returned, from the head of the queue. It
// reports false when r is no longer the head: its requester amended it
// (see swap) since peek, and the caller must look again.
func (q *txQueue) pop(r *request) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 || q.items[0] != r {
		return false
	}
	q.items = q.items[1:]
	return true
}

// find returns the waiting request from origin with id, or nil.
func (q *txQueue) find(origin string, id uint32) (waiting *request, snapshot request) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, r := range q.items {
		if r.origin == origin && r.id == id {
			// A copy to read: once the lock is released the session may
			// take the request and change it (its channel, its packet id).
			return r, *r
		}
	}
	return nil, request{}
}

// swap puts r in old's place in the queue, or removes old when r is nil.
// It reports false when old no longer waits (the session took it).
// Requests are swapped, never changed in place: the session reads the
// head without the lock between peek and pop.
func (q *txQueue) swap(old, r *request) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, it := range q.items {
		if it != old {
			continue
		}
		if r == nil {
			q.items = append(q.items[:i], q.items[i+1:]...)
		} else {
			q.items[i] = r
		}
		q.notify()
		return true
	}
	return false
}

// has reports whether a request from origin with id waits or is being sent.
func (q *txQueue) has(origin string, id uint32) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, r := range q.items {
		if r.origin == origin && r.id == id {
			return true
		}
	}
	return false
}

func (q *txQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// pacer spaces packets of the same port as the firmware's API rate limits
// require: the firmware drops, rather than queues, a text that comes less
// than 2 s after the previous one, and positions or telemetry less than 10 s
// apart.
type pacer struct {
	min  map[meshpb.PortNum]time.Duration
	last map[meshpb.PortNum]time.Time
}

func newPacer(textInterval time.Duration) *pacer {
	return &pacer{
		min: map[meshpb.PortNum]time.Duration{
			meshpb.PortNum_TEXT_MESSAGE_APP: textInterval,
			meshpb.PortNum_ALERT_APP:        10*time.Second + 500*time.Millisecond,
			meshpb.PortNum_POSITION_APP:     10*time.Second + 500*time.Millisecond,
			meshpb.PortNum_WAYPOINT_APP:     10*time.Second + 500*time.Millisecond,
			meshpb.PortNum_TELEMETRY_APP:    10*time.Second + 500*time.Millisecond,
		},
		last: map[meshpb.PortNum]time.Time{},
	}
}

// wait is how long a packet on port must still wait, with the spacing
// stretched by factor (a busy channel).
func (p *pacer) wait(port meshpb.PortNum, now time.Time, factor float64) time.Duration {
	last, ok := p.last[port]
	if !ok {
		return 0
	}
	return max(0, last.Add(time.Duration(float64(p.min[port])*factor)).Sub(now))
}

func (p *pacer) sent(port meshpb.PortNum, now time.Time) { p.last[port] = now }

// idGen makes packet ids the way the official clients do: random high bits
// and a counter in the low ten, so ids are unique across restarts and never
// zero (zero asks the firmware to pick one, and then QueueStatus and routing
// replies cannot be matched to the request).
type idGen struct {
	mu      sync.Mutex
	counter uint32
}

func (g *idGen) next() uint32 {
	g.mu.Lock()
	defer g.mu.Unlock()
	for {
		g.counter++
		var b [4]byte
		_, _ = rand.Read(b[:])
		id := binary.LittleEndian.Uint32(b[:])<<10 | g.counter&0x3ff
		if id != 0 {
			return id
		}
	}
}
