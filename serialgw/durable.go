package serialgw

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/internal/spool"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// Spool is the durable store the radio link keeps its transmit queue and
// its record of packets already heard in, so that a restart (or a power
// cut) loses nothing accepted and publishes nothing twice.
type Spool interface {
	Push(queue string, data []byte, dedupeKey string) (seq uint64, dup bool, err error)
	Peek(queue string, n int) ([]spool.Item, error)
	Ack(queue string, seqs ...uint64) error
	Seen(key string) (bool, error)
	Mark(key string) error
}

const txQueueName = "radio-tx"

// spooledRequest is a request as it is kept on disk.
type spooledRequest struct {
	ID      uint32    `json:"id"`
	Origin  string    `json:"origin"`
	To      uint32    `json:"to"`
	Channel uint32    `json:"channel"`
	ChName  string    `json:"channel_name,omitempty"`
	WireID  uint32    `json:"wire_id"`
	Data    []byte    `json:"data"`
	Queued  time.Time `json:"queued"`
	// A JSON downlink from before the first handshake, not yet parsed.
	Downlink []byte `json:"downlink,omitempty"`
	Root     string `json:"root,omitempty"`
	// A JSON downlink's own "id", for its results, and whether it asks
	// for an acknowledgement.
	Client  json.RawMessage `json:"client_id,omitempty"`
	WantAck bool            `json:"want_ack,omitempty"`
}

// persist records an accepted request before it is queued. A request seen
// before (same origin and id) reports dup and is not queued again.
func (g *Gateway) persist(r *request) (dup bool, err error) {
	if g.cfg.Spool == nil {
		return false, nil
	}
	var data []byte
	if r.data != nil {
		if data, err = proto.Marshal(r.data); err != nil {
			return false, err
		}
	}
	b, err := jsonSpooled(r, data)
	if err != nil {
		return false, err
	}
	// The key names the request by its origin, id and content: a resend of
	// the same request is recognised, and two requests whose 32-bit ids
	// happen to collide are not mistaken for one.
	h := fnv.New64a()
	h.Write(data)
	h.Write(r.downlink)
	seq, dup, err := g.cfg.Spool.Push(txQueueName, b, fmt.Sprintf("tx:%s:%d:%x:%x", r.origin, r.id, r.to, h.Sum64()))
	if err != nil {
		return false, err
	}
	r.seq = seq
	return dup, nil
}

// jsonSpooled is a request as the spool keeps it; data is its Data encoded.
func jsonSpooled(r *request, data []byte) ([]byte, error) {
	s := spooledRequest{ID: r.id, Origin: r.origin, To: r.to, Channel: r.channel, ChName: r.chName, WireID: r.wireID, Data: data, Queued: r.queued,
		Downlink: r.downlink, Root: r.root}
	if r.dl != nil {
		s.Client, s.WantAck = r.dl.client, r.dl.wantAck
	}
	return json.Marshal(s)
}

// done removes a request that reached its outcome from the spool.
func (g *Gateway) done(r *request) {
	if g.cfg.Spool == nil || r.seq == 0 {
		return
	}
	if err := g.cfg.Spool.Ack(txQueueName, r.seq); err != nil {
		g.log.Error("spool: could not mark a sent packet done; it may be sent again after a restart", "err", err)
	}
}

// restore puts what the spool holds back into the transmit queue, in order.
func (g *Gateway) restore() error {
	if g.cfg.Spool == nil {
		return nil
	}
	items, err := g.cfg.Spool.Peek(txQueueName, 0)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	for _, it := range items {
		var s spooledRequest
		d := new(meshpb.Data)
		if json.Unmarshal(it.Data, &s) != nil || proto.Unmarshal(s.Data, d) != nil {
			g.log.Error("spool: dropping an unreadable queued packet", "seq", it.Seq)
			_ = g.cfg.Spool.Ack(txQueueName, it.Seq)
			continue
		}
		r := &request{id: s.ID, origin: s.Origin, to: s.To, channel: s.Channel, chName: s.ChName, wireID: s.WireID, data: d, queued: s.Queued, seq: it.Seq}
		if s.Downlink != nil {
			r.data, r.downlink, r.root = nil, s.Downlink, s.Root
		}
		if s.Origin == topics.OriginJSONDownlink {
			// Queued before the restart, and reported so, unless it was
			// still waiting to be parsed.
			r.dl = &downlinkState{client: s.Client, wantAck: s.WantAck, stage: stageQueued}
			if r.downlink != nil {
				r.dl.stage = stageTaken
			}
		}
		g.tx.restore(r)
	}
	if len(items) > 0 {
		g.log.Info("packets from before the restart are queued for the radio", "count", len(items))
	}
	return nil
}

// heardBefore reports whether a packet was already published, across
// restarts when there is a spool: the radio replays its cache after a
// handshake, and several relays repeat every packet.
func (g *Gateway) heardBefore(from, id uint32, now time.Time) bool {
	if g.seen.seen(from, id, now) {
		return true
	}
	if g.cfg.Spool == nil {
		return false
	}
	key := fmt.Sprintf("rx:%08x:%08x", from, id)
	if seen, err := g.cfg.Spool.Seen(key); err == nil && seen {
		return true
	}
	if err := g.cfg.Spool.Mark(key); err != nil {
		g.log.Warn("spool: could not record a heard packet", "err", err)
	}
	return false
}
