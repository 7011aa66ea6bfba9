package serialgw

import (
	"encoding/json"
	"time"

	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// A JSON downlink's results (topics.DownlinkResult on topics.JSONResult):
// exactly one terminal result, and at most one "queued" before it. The
// radio link's own events drive them: queued when it is checked and
// queued; then the outcomes that also go on topics.MeshResult, told apart
// by how far the request had got.

// downlinkStage is how far a JSON downlink got.
type downlinkStage uint8

const (
	// stageTaken: taken in, not yet checked. Before the radio's first
	// handshake a downlink waits here, unparsed, until the radio is known.
	stageTaken downlinkStage = iota
	// stageQueued: checked and in the transmit queue; "queued" is out.
	stageQueued
	// stageSent: the radio took the packet. Its result waits for a refusal
	// the radio sends right after taking a packet (its text rate limit, its
	// duty cycle) or, for a direct message, the destination's
	// acknowledgement.
	stageSent
	// stageDone: the terminal result is out.
	stageDone
)

// downlinkState is what a JSON downlink's results need.
type downlinkState struct {
	client  json.RawMessage // the request's own "id", verbatim; nil if none
	wantAck bool            // a direct message, sent asking for an acknowledgement
	// stage and timer are guarded by Gateway.dlMu.
	stage downlinkStage
	timer *time.Timer // the wait in stageSent
}

// ParseDownlink checks a JSON downlink as the radio link does for the
// radio with node number gateway: the message (mesh.ParseDownlink) and
// the client's own "id" (topics.DownlinkID). The id is returned even when
// the message is refused, so that the refusal carries it.
func ParseDownlink(payload []byte, gateway uint32) (mesh.Downlink, json.RawMessage, error) {
	client, err := topics.DownlinkID(payload)
	if err != nil {
		return mesh.Downlink{}, nil, err
	}
	dl, err := mesh.ParseDownlink(payload, gateway)
	return dl, client, err
}

// downlinkQueued reports a JSON downlink checked and about to be queued.
// It is published before the request can reach the radio, so that it
// precedes every later result.
func (g *Gateway) downlinkQueued(r *request) {
	g.dlMu.Lock()
	defer g.dlMu.Unlock()
	if r.dl.stage != stageTaken {
		return
	}
	r.dl.stage = stageQueued
	g.publishDownlinkResult(r, topics.DownlinkQueued, meshpb.Routing_NONE, "")
}

// downlinkRefused reports a JSON downlink refused before it was queued
// that has no result on topics.MeshResult: one that does not parse.
func (g *Gateway) downlinkRefused(r *request, reason meshpb.Routing_Error, detail string) {
	g.dlMu.Lock()
	defer g.dlMu.Unlock()
	g.finishDownlink(r, topics.DownlinkRefused, reason, detail)
}

// downlinkOutcome turns an outcome reported on topics.MeshResult into the
// JSON downlink's result, by how far the request had got: refused before
// it was queued, failed after; a NONE is the radio taking the packet, and
// then the acknowledgement of a direct message when it comes from the
// destination (from); another node's (a relay repeating the packet) is no
// acknowledgement.
func (g *Gateway) downlinkOutcome(r *request, reason meshpb.Routing_Error, from uint32, detail string) {
	g.dlMu.Lock()
	defer g.dlMu.Unlock()
	dl := r.dl
	switch {
	case dl.stage == stageDone:
	case dl.stage == stageTaken:
		g.finishDownlink(r, topics.DownlinkRefused, reason, detail)
	case reason != meshpb.Routing_NONE:
		g.finishDownlink(r, topics.DownlinkFailed, reason, detail)
	case dl.stage == stageQueued:
		dl.stage = stageSent
		wait := g.cfg.RefusalGrace
		if dl.wantAck {
			wait = g.cfg.AckTimeout
		}
		g.dlWaiting[r.wireID] = r
		dl.timer = time.AfterFunc(wait, func() { g.downlinkWaitOver(r) })
	case dl.wantAck && from == r.to:
		g.finishDownlink(r, topics.DownlinkAcked, meshpb.Routing_NONE, "")
	}
}

// downlinkWaitOver ends the wait of a request the radio took: no refusal
// came, so it is sent; or no acknowledgement came, so it failed.
func (g *Gateway) downlinkWaitOver(r *request) {
	g.dlMu.Lock()
	defer g.dlMu.Unlock()
	if r.dl.stage != stageSent {
		return
	}
	if r.dl.wantAck {
		g.finishDownlink(r, topics.DownlinkFailed, meshpb.Routing_TIMEOUT,
			"no acknowledgement from "+mesh.NodeID(r.to)+" within "+g.cfg.AckTimeout.String())
		return
	}
	g.finishDownlink(r, topics.DownlinkSent, meshpb.Routing_NONE, "")
}

// awaitingReply returns the JSON downlink the radio took as packet id,
// whose result waits for the mesh's answer: it is matched across a
// reconnect, which a session's own record of what it sent is not.
func (g *Gateway) awaitingReply(id uint32) (*request, bool) {
	g.dlMu.Lock()
	defer g.dlMu.Unlock()
	r, ok := g.dlWaiting[id]
	return r, ok
}

// endDownlinkWaits gives every request still waiting its result when the
// radio link stops: after a restart no answer could be matched to it.
func (g *Gateway) endDownlinkWaits() {
	g.dlMu.Lock()
	defer g.dlMu.Unlock()
	for _, r := range g.dlWaiting {
		if r.dl.wantAck {
			g.finishDownlink(r, topics.DownlinkFailed, meshpb.Routing_TIMEOUT,
				"the bridge stopped before "+mesh.NodeID(r.to)+" acknowledged it; it may still have arrived")
		} else {
			g.finishDownlink(r, topics.DownlinkSent, meshpb.Routing_NONE, "")
		}
	}
}

// finishDownlink publishes a request's terminal result, once. The caller
// holds dlMu.
func (g *Gateway) finishDownlink(r *request, status topics.DownlinkStatus, reason meshpb.Routing_Error, detail string) {
	dl := r.dl
	if dl.stage == stageDone {
		return
	}
	if dl.timer != nil {
		dl.timer.Stop()
		dl.timer = nil
	}
	if dl.stage == stageSent {
		delete(g.dlWaiting, r.wireID)
	}
	dl.stage = stageDone
	g.publishDownlinkResult(r, status, reason, detail)
}

// publishDownlinkResult publishes one result. The caller holds dlMu, so
// the results of one request go out in order.
func (g *Gateway) publishDownlinkResult(r *request, status topics.DownlinkStatus, reason meshpb.Routing_Error, detail string) {
	res := topics.DownlinkResult{ID: r.dl.client, RequestID: r.id, Status: status}
	if status == topics.DownlinkRefused || status == topics.DownlinkFailed {
		res.Reason = reason.String()
		if detail == "" {
			detail = routingSentence(reason)
		}
		res.Detail = detail
	}
	if status != topics.DownlinkRefused {
		res.PacketID = r.wireID
	}
	g.mu.Lock()
	res.Gateway = g.gwID
	g.mu.Unlock()
	b, err := res.Marshal()
	if err != nil {
		g.log.Error("encode", "topic", topics.JSONResult, "err", err)
		return
	}
	g.log.Debug("JSON downlink result", "request", r.id, "status", string(status), "reason", res.Reason)
	g.publish(topics.JSONResult, b, false)
}

// routingSentence says what a Routing error means for the sender of a
// packet, for a result that has no more specific detail.
func routingSentence(reason meshpb.Routing_Error) string {
	switch reason {
	case meshpb.Routing_NO_ROUTE:
		return "the mesh knows no route to the destination"
	case meshpb.Routing_GOT_NAK:
		return "a node on the way refused the packet"
	case meshpb.Routing_TIMEOUT:
		return "the packet was not confirmed in time"
	case meshpb.Routing_NO_INTERFACE:
		return "the bridge could not keep the packet"
	case meshpb.Routing_MAX_RETRANSMIT:
		return "the destination did not acknowledge the packet, however often the radio sent it"
	case meshpb.Routing_NO_CHANNEL:
		return "the radio has no such channel"
	case meshpb.Routing_TOO_LARGE:
		return "the packet is too large for the mesh"
	case meshpb.Routing_NO_RESPONSE:
		return "the destination did not answer"
	case meshpb.Routing_DUTY_CYCLE_LIMIT:
		return "the region's duty cycle is spent for now; the radio may send again later"
	case meshpb.Routing_BAD_REQUEST:
		return "the radio refused the packet as invalid"
	case meshpb.Routing_NOT_AUTHORIZED:
		return "the destination refused the packet as not authorized"
	case meshpb.Routing_PKI_FAILED:
		return "the packet could not be encrypted for the destination"
	case meshpb.Routing_PKI_UNKNOWN_PUBKEY:
		return "the destination does not know the radio's public key"
	case meshpb.Routing_RATE_LIMIT_EXCEEDED:
		return "too much at once: the radio dropped the packet under its rate limit"
	}
	return "the radio or the mesh refused the packet"
}
