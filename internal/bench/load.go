package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/jshiffer/lora-xmpp-bridge/internal/bench/benchkit"
)

// loadTopic looks like what the bridge publishes; both brokers let the
// load's clients write it.
const loadTopic = "msh/EU_868/2/e/LongFast/!5eed0001"

// loadTarget is a broker under load.
type loadTarget struct {
	name       string
	addr       string // host:port
	user, pass string // empty for an anonymous client
	pid        int    // the broker's process, for its CPU time
}

// loadCase is one cell of the throughput table.
type loadCase struct {
	subs int
	qos  byte
}

// loadResult is one measurement.
type loadResult struct {
	msgs        int           // messages published, each received by every subscriber
	nsubs       int           // subscribers
	dups        int64         // copies received twice (allowed at QoS 1; not counted)
	elapsed     time.Duration // from the first publish to the last delivery
	brokerCPU   time.Duration
	clientCPU   time.Duration // this process: the publisher and the subscribers
	machineBusy float64       // share of all cores busy
}

func (r loadResult) msgRate() float64 { return float64(r.msgs) / r.elapsed.Seconds() }

func warmUpN(n int) int { return max(n/10, 100) }

// runLoad connects a publisher and c.subs subscribers to t, runs a warm-up
// round and then the measured one.
func runLoad(t loadTarget, c loadCase, o brokersOptions) (loadResult, error) {
	l, err := connectLoad(t, c, o.timeout)
	if err != nil {
		return loadResult{}, err
	}
	defer l.close()
	if _, err := l.round(1, warmUpN(o.loadN), o); err != nil {
		return loadResult{}, fmt.Errorf("warm-up: %w", err)
	}
	return l.round(2, o.loadN, o)
}

// load is a connected publisher and its subscribers.
type load struct {
	t      loadTarget
	qos    byte
	pub    paho.Client
	subs   []paho.Client
	cur    atomic.Pointer[round]
	failMu sync.Mutex
	failed error
}

// round is the state of one series of messages. Each subscriber's slot is
// written only by that subscriber's paho goroutine (handlers of one client
// run in order, on one goroutine); the counters are read by the publisher.
type round struct {
	id    byte
	n     int
	subs  []subCount
	left  atomic.Int32 // subscribers that have not received all n yet
	end   time.Time    // written by the last subscriber to finish, before done closes
	done  chan struct{}
	wait  atomic.Bool   // the publisher is waiting for the window to open
	wake  chan struct{} // capacity 1
	stray atomic.Int64  // messages of another round or malformed
}

type subCount struct {
	seen []bool
	got  atomic.Int64 // distinct messages received
	dups atomic.Int64
}

func connectLoad(t loadTarget, c loadCase, timeout time.Duration) (*load, error) {
	l := &load{t: t, qos: c.qos}
	ok := false
	defer func() {
		if !ok {
			l.close()
		}
	}()
	for i := range c.subs {
		cl, err := l.connect(fmt.Sprintf("bench-sub-%d", i), timeout)
		if err != nil {
			return nil, err
		}
		l.subs = append(l.subs, cl)
		k := i
		tok := cl.Subscribe(loadTopic, c.qos, func(_ paho.Client, m paho.Message) { l.received(k, m.Payload()) })
		if !tok.WaitTimeout(timeout) || tok.Error() != nil {
			return nil, fmt.Errorf("subscribe: %v", tok.Error())
		}
		if st, _ := tok.(*paho.SubscribeToken); st != nil && st.Result()[loadTopic] == 0x80 {
			return nil, errors.New("subscription refused")
		}
	}
	pub, err := l.connect("bench-pub", timeout)
	if err != nil {
		return nil, err
	}
	l.pub = pub
	ok = true
	return l, nil
}

func (l *load) connect(id string, timeout time.Duration) (paho.Client, error) {
	opts := paho.NewClientOptions().AddBroker("tcp://" + l.t.addr).SetClientID(id).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(timeout).
		SetConnectionLostHandler(func(_ paho.Client, err error) { l.fail(fmt.Errorf("%s: connection lost: %w", id, err)) })
	if l.t.user != "" {
		opts.SetUsername(l.t.user).SetPassword(l.t.pass)
	}
	cl := paho.NewClient(opts)
	if tok := cl.Connect(); !tok.WaitTimeout(timeout) || tok.Error() != nil {
		return nil, fmt.Errorf("%s: connect to %s: %v", id, l.t.addr, tok.Error())
	}
	return cl, nil
}

func (l *load) fail(err error) {
	l.failMu.Lock()
	defer l.failMu.Unlock()
	if l.failed == nil {
		l.failed = err
	}
}

func (l *load) err() error {
	l.failMu.Lock()
	defer l.failMu.Unlock()
	return l.failed
}

func (l *load) close() {
	for _, c := range append([]paho.Client{l.pub}, l.subs...) {
		if c != nil {
			c.Disconnect(100)
		}
	}
}

// received counts message p at subscriber k.
func (l *load) received(k int, p []byte) {
	r := l.cur.Load()
	if r == nil || len(p) < 5 || p[0] != r.id {
		if r != nil {
			r.stray.Add(1)
		}
		return
	}
	i := int(binary.BigEndian.Uint32(p[1:5]))
	if i >= r.n {
		r.stray.Add(1)
		return
	}
	s := &r.subs[k]
	if s.seen[i] {
		s.dups.Add(1)
		return
	}
	s.seen[i] = true
	if s.got.Add(1) == int64(r.n) && r.left.Add(-1) == 0 {
		r.end = time.Now()
		close(r.done)
	}
	if r.wait.Load() {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

// slowest is the fewest messages any subscriber has received.
func (r *round) slowest() int64 {
	m := int64(math.MaxInt64)
	for i := range r.subs {
		m = min(m, r.subs[i].got.Load())
	}
	return m
}

func (r *round) counts() string {
	s := ""
	for i := range r.subs {
		s += fmt.Sprintf(" %d", r.subs[i].got.Load())
	}
	return fmt.Sprintf("received%s of %d; duplicates %d; stray %d", s, r.n, r.dups(), r.stray.Load())
}

func (r *round) dups() int64 {
	var d int64
	for i := range r.subs {
		d += r.subs[i].dups.Load()
	}
	return d
}

// round publishes n messages as fast as the window allows and waits until
// every subscriber has received all of them.
func (l *load) round(id byte, n int, o brokersOptions) (loadResult, error) {
	r := &round{id: id, n: n, subs: make([]subCount, len(l.subs)), done: make(chan struct{}), wake: make(chan struct{}, 1)}
	for i := range r.subs {
		r.subs[i].seen = make([]bool, n)
	}
	r.left.Store(int32(len(l.subs)))
	payloads := make([][]byte, n)
	for i := range payloads {
		p := make([]byte, o.loadSize)
		p[0] = id
		binary.BigEndian.PutUint32(p[1:5], uint32(i))
		for j := 5; j < len(p); j++ {
			p[j] = 'a' + byte((i+j)%26)
		}
		payloads[i] = p
	}
	l.cur.Store(r)

	meter := benchkit.NewCPUMeter(l.t.pid, 0)
	if err := meter.Start(); err != nil {
		return loadResult{}, err
	}
	stall := time.NewTimer(o.timeout)
	defer stall.Stop()
	window := int64(o.loadWindow)
	floor := int64(0) // a lower bound of slowest(), refreshed only when the window looks full
	var last paho.Token
	start := time.Now()
	for i := range n {
		for int64(i)-floor >= window {
			if floor = r.slowest(); int64(i)-floor < window {
				break
			}
			// Announce the wait, then look again: a delivery in between
			// either is seen here or sends a wake-up.
			r.wait.Store(true)
			if floor = r.slowest(); int64(i)-floor < window {
				r.wait.Store(false)
				break
			}
			stall.Reset(o.timeout)
			select {
			case <-r.wake:
			case <-stall.C:
				return loadResult{}, fmt.Errorf("stalled at message %d: %s; %v", i, r.counts(), l.err())
			}
			r.wait.Store(false)
			if err := l.err(); err != nil {
				return loadResult{}, err
			}
		}
		last = l.pub.Publish(loadTopic, l.qos, false, payloads[i])
	}
	select {
	case <-r.done:
	case <-time.After(o.timeout):
		return loadResult{}, fmt.Errorf("not all delivered within %v: %s; %v", o.timeout, r.counts(), l.err())
	}
	if err := meter.Stop(); err != nil {
		return loadResult{}, err
	}
	// Delivered everywhere, so the broker has every message; at QoS 1 its
	// last acknowledgement may still be on the way.
	if !last.WaitTimeout(o.timeout) || last.Error() != nil {
		return loadResult{}, fmt.Errorf("last publish: %v", last.Error())
	}
	if err := l.err(); err != nil {
		return loadResult{}, err
	}
	if d := r.dups(); d > 0 && l.qos == 0 {
		return loadResult{}, fmt.Errorf("%d duplicates at QoS 0", d)
	}
	return loadResult{
		msgs: n, nsubs: len(l.subs), dups: r.dups(), elapsed: r.end.Sub(start),
		brokerCPU: meter.Used[0], clientCPU: meter.Used[1], machineBusy: meter.MachineBusyShare,
	}, nil
}
