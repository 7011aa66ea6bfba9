package serialgw

import (
	"fmt"
	"hash/fnv"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// onAmend takes in an amend (topics.Amend) of a send request: a request
// that still waits in the transmit queue is cancelled, or given new
// content in its place; one the radio has already (sent, or being sent)
// is left alone. Either way the requester is told, once.
func (g *Gateway) onAmend(topic string, payload []byte) {
	a, err := topics.ParseAmend(payload)
	if err != nil {
		g.malformedRequest(topic, err)
		return
	}
	waiting, snap := g.tx.find(a.Origin, a.Target)
	old := &snap // read only the copy; swap by the queue's own pointer
	if waiting != nil && snap.downlink != nil {
		waiting = nil // a JSON downlink not parsed yet: not the requester's to amend
	}
	if waiting == nil {
		g.log.Info("amend of a request that no longer waits; nothing changed", "origin", a.Origin, "request", a.Target, "action", string(a.Action))
		g.answerAmend(a, topics.AmendNotWaiting, "", g.wires.get(a.Origin, a.Target))
		return
	}
	if a.Action == topics.AmendCancel {
		if !g.tx.swap(waiting, nil) {
			g.answerAmend(a, topics.AmendNotWaiting, "", old.wireID)
			return
		}
		g.done(old)
		g.log.Info("queued packet cancelled by its requester", "origin", a.Origin, "request", a.Target, "id", old.wireID)
		g.answerAmend(a, topics.AmendApplied, "", 0)
		return
	}
	if old.data != nil && proto.Equal(old.data, a.Data) {
		g.answerAmend(a, topics.AmendApplied, "", old.wireID) // asked again: done already
		return
	}
	// A new request in the old one's place: the session may be reading the
	// old one right now, so it is never changed in place. A new packet id
	// too: the old one may have reached the radio before a link drop put
	// it back in the queue, and the firmware drops an id it has seen.
	r := &request{id: old.id, origin: old.origin, to: old.to, channel: old.channel, chName: old.chName, root: old.root,
		data: a.Data, queued: old.queued, wireID: g.ids.next(), dl: old.dl}
	if err := validate(r); err != nil {
		g.log.Warn("amend refused; the request is unchanged", "origin", a.Origin, "request", a.Target, "err", err)
		g.answerAmend(a, topics.AmendRefused, refusal(err).String(), 0)
		return
	}
	if err := g.persistReplacement(r, a.ID); err != nil {
		g.log.Error("spool: cannot keep a replaced packet; the request is unchanged", "err", err)
		g.answerAmend(a, topics.AmendRefused, meshpb.Routing_NO_INTERFACE.String(), 0)
		return
	}
	if !g.tx.swap(waiting, r) {
		g.done(r)
		g.answerAmend(a, topics.AmendNotWaiting, "", old.wireID)
		return
	}
	g.done(old)
	g.log.Info("queued packet replaced by its requester", "origin", a.Origin, "request", a.Target, "id", r.wireID)
	g.answerAmend(a, topics.AmendApplied, "", r.wireID)
}

// persistReplacement keeps a replacement request in the spool. Its key is
// the amend's own, and the key the request would have with this content
// is marked too: the requester may offer the request again with it (after
// a restart of either side), which must not queue it a second time.
func (g *Gateway) persistReplacement(r *request, amendID uint32) error {
	if g.cfg.Spool == nil {
		return nil
	}
	b, key, err := g.spooled(r)
	if err != nil {
		return err
	}
	seq, _, err := g.cfg.Spool.Push(txQueueName, b, fmt.Sprintf("%s:amend:%d", key, amendID))
	if err != nil {
		return err
	}
	r.seq = seq
	return g.cfg.Spool.Mark(key)
}

// spooled is a request as the spool keeps it, and its dedupe key.
func (g *Gateway) spooled(r *request) ([]byte, string, error) {
	data, err := proto.Marshal(r.data)
	if err != nil {
		return nil, "", err
	}
	h := fnv.New64a()
	h.Write(data)
	b, err := jsonSpooled(r, data)
	return b, fmt.Sprintf("tx:%s:%d:%x:%x", r.origin, r.id, r.to, h.Sum64()), err
}

// refuseAmend answers an amend the intake has no room for.
func (g *Gateway) refuseAmend(topic string, payload []byte) {
	a, err := topics.ParseAmend(payload)
	if err != nil {
		g.malformedRequest(topic, err)
		return
	}
	g.answerAmend(a, topics.AmendRefused, meshpb.Routing_RATE_LIMIT_EXCEEDED.String(), 0)
}

func (g *Gateway) answerAmend(a topics.Amend, outcome topics.AmendOutcome, reason string, packetID uint32) {
	g.mu.Lock()
	gw := g.gwID
	g.mu.Unlock()
	b, err := topics.AmendResult{Origin: a.Origin, ID: a.ID, Target: a.Target, Outcome: outcome, Reason: reason, Gateway: gw, PacketID: packetID}.Marshal()
	if err != nil {
		g.log.Error("encode", "topic", topics.MeshAmendResult, "err", err)
		return
	}
	g.publish(topics.MeshAmendResult, b, false)
}

// wireIDs remembers the packet ids of the last requests the radio took, by
// origin and request id: bounded, oldest forgotten first.
type wireIDs struct {
	mu    sync.Mutex
	ids   map[wireKey]uint32
	order []wireKey
}

type wireKey struct {
	origin string
	id     uint32
}

const wireIDsKept = 1024

func (w *wireIDs) add(origin string, id, wire uint32) {
	if wire == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ids == nil {
		w.ids = map[wireKey]uint32{}
	}
	k := wireKey{origin, id}
	if _, ok := w.ids[k]; !ok {
		w.order = append(w.order, k)
	}
	w.ids[k] = wire
	if len(w.order) > wireIDsKept {
		delete(w.ids, w.order[0])
		w.order = w.order[1:]
	}
}

func (w *wireIDs) get(origin string, id uint32) uint32 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ids[wireKey{origin, id}]
}
