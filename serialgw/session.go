package serialgw

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
)

// Nonces with special meaning to the firmware (config only, nodes only).
const (
	nonceOnlyConfig = 69420
	nonceOnlyNodes  = 69421
)

var errHandshake = errors.New("radio did not complete the handshake")

// inflight is a packet written to the radio and not yet confirmed by its
// QueueStatus.
type inflight struct {
	req      *request
	wireID   uint32
	deadline time.Time
	pkt      *meshpb.MeshPacket // as written to the radio
}

// session is one connection to the radio, from open to close.
type session struct {
	g    *Gateway
	conn io.ReadWriteCloser
	log  *slog.Logger

	radio      *radioState // being collected by the handshake
	nonce      uint32
	up         bool
	attempts   int
	deadline   time.Time // of the current handshake attempt
	lastRx     time.Time
	queueKnown bool // the radio has sent a QueueStatus: it does flow control
	noFlowCtl  bool // the radio never confirms packets (old firmware)
	// airHeld is the packet last held back for airtime. Airtime stays
	// reported as blocked until a packet goes without being held, or the
	// queue is empty, so a flood trickling out is one blocked period and
	// not one per packet.
	airHeld   *request
	free      int // free slots in the radio's TX queue as last reported
	pending   *inflight
	sentIDs   map[uint32]*request // recent wire ids, to match routing replies
	sentOrder []uint32
	wbuf      []byte

	accepted      []accepted       // taken by the radio, to be published once not refused
	ownPos        *meshpb.Position // the radio's own position, nil while unknown
	mapSkipLogged bool             // why no map report goes out was said
}

func newSession(g *Gateway, conn io.ReadWriteCloser, name string) *session {
	return &session{g: g, conn: conn, log: g.log.With("device", name), free: 1, sentIDs: map[uint32]*request{}}
}

type readResult struct {
	msg *meshpb.FromRadio
	err error
}

// run drives the session until the radio goes away or ctx ends.
func (s *session) run(ctx context.Context) error {
	frames := make(chan readResult, 32)
	quit := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		s.read(frames, quit)
	}()
	defer func() {
		close(quit)
		s.conn.Close() // unblocks the reader
		<-readerDone
		s.flushAccepted(time.Now(), true)
		if s.pending != nil {
			// The radio may or may not have taken it; sending it again after
			// the next handshake is better than losing it.
			s.g.tx.pushFront(s.pending.req)
			s.pending = nil
		}
	}()

	if err := s.startHandshake(ctx); err != nil {
		return err
	}
	tick := time.NewTicker(min(time.Second, s.g.cfg.HeartbeatInterval/4))
	defer tick.Stop()
	lastBeat := time.Now()
	pace := time.NewTimer(time.Hour)
	defer pace.Stop()

	for {
		select {
		case <-ctx.Done():
			// Tell the firmware we are leaving so it stops queueing for us.
			s.write(&meshpb.ToRadio{PayloadVariant: &meshpb.ToRadio_Disconnect{Disconnect: true}})
			return ctx.Err()

		case rr := <-frames:
			if rr.err != nil {
				if errors.Is(rr.err, io.EOF) {
					rr.err = fmt.Errorf("radio closed the connection: %w", rr.err)
				}
				return rr.err
			}
			s.lastRx = time.Now()
			wasUp := s.up
			if err := s.handle(ctx, rr.msg); err != nil {
				return err
			}
			if s.up && !wasUp {
				lastBeat = time.Time{} // ask for a QueueStatus right away
			}
			// A confirmation or a handshake may have freed the way for the
			// next packet.
			if s.up {
				if err := s.trySend(pace); err != nil {
					return err
				}
			}

		case now := <-tick.C:
			s.g.tick()
			s.flushAccepted(now, false)
			if s.up {
				s.periodic(now, false)
			}
			switch {
			case !s.up && now.After(s.deadline):
				s.attempts++
				if s.attempts >= 3 {
					return fmt.Errorf("%w after %d attempts of %v", errHandshake, s.attempts, s.g.cfg.HandshakeTimeout)
				}
				s.log.Warn("radio handshake timed out; asking again", "attempt", s.attempts+1)
				if err := s.startHandshake(ctx); err != nil {
					return err
				}
			case s.up && !s.noFlowCtl && now.Sub(s.lastRx) > s.g.cfg.HeartbeatInterval+s.g.cfg.ReplyTimeout:
				// (Firmware without flow control does not answer heartbeats,
				// so its silence means nothing.)
				// A rebooted radio, or one whose API timed out, is silent but
				// still connected: a fresh handshake brings it back.
				s.log.Warn("radio stopped answering; handshaking again", "silent_for", now.Sub(s.lastRx).Round(time.Second))
				if err := s.startHandshake(ctx); err != nil {
					return err
				}
			case s.up && now.Sub(lastBeat) >= s.g.cfg.HeartbeatInterval:
				lastBeat = now
				// Nonce 1 would make the firmware broadcast our NodeInfo.
				if err := s.write(&meshpb.ToRadio{PayloadVariant: &meshpb.ToRadio_Heartbeat{Heartbeat: &meshpb.Heartbeat{Nonce: 0}}}); err != nil {
					return err
				}
			}
			if s.pending != nil && now.After(s.pending.deadline) {
				s.sendTimedOut()
			}
			if err := s.trySend(pace); err != nil {
				return err
			}

		case <-s.g.tx.ready:
			if err := s.trySend(pace); err != nil {
				return err
			}
		case <-pace.C:
			if err := s.trySend(pace); err != nil {
				return err
			}

		case m := <-s.g.proxyOut:
			if s.up {
				if err := s.write(&meshpb.ToRadio{PayloadVariant: &meshpb.ToRadio_MqttClientProxyMessage{MqttClientProxyMessage: m}}); err != nil {
					return err
				}
			}
		}
	}
}

// read turns the byte stream into FromRadio messages. Text between frames is
// the radio's console log and goes to the debug log.
func (s *session) read(out chan<- readResult, quit <-chan struct{}) {
	var last *meshpb.FromRadio
	valid := func(p []byte) bool {
		m := new(meshpb.FromRadio)
		// A torn frame may still parse as a protobuf; one that sets no
		// payload variant is not something the firmware sends.
		if proto.Unmarshal(p, m) != nil || m.GetPayloadVariant() == nil {
			return false
		}
		last = m
		return true
	}
	fr := mesh.NewFrameReader(s.conn, valid)
	var prev mesh.FrameStats
	defer func() { s.count(fr.Stats(), prev) }()
	for {
		item, err := fr.Next()
		st := fr.Stats()
		s.count(st, prev)
		prev = st
		var rr readResult
		switch {
		case err != nil:
			rr.err = err
		case item.Log != "":
			s.log.Debug("radio console", "text", item.Log)
			continue
		default:
			rr.msg = last
		}
		select {
		case out <- rr:
		case <-quit:
			return
		}
		if err != nil {
			return
		}
	}
}

func (s *session) count(now, prev mesh.FrameStats) {
	st := &s.g.Stats
	st.FramesIn.Add(now.Frames - prev.Frames)
	st.LogLines.Add(now.LogLines - prev.LogLines)
	if d := now.Rejected - prev.Rejected; d > 0 {
		st.FramesRejected.Add(d)
		s.log.Debug("dropped a frame that does not decode", "total", st.FramesRejected.Load())
	}
	if d := now.Oversize - prev.Oversize; d > 0 {
		st.FramesOversize.Add(d)
		s.log.Debug("dropped a frame header announcing more than 512 bytes", "total", st.FramesOversize.Load())
	}
}

func (s *session) write(m *meshpb.ToRadio) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	s.wbuf, err = mesh.AppendFrame(s.wbuf[:0], b)
	if err != nil {
		return err
	}
	return s.writeRaw(s.wbuf)
}

// writeRaw writes to the radio. On a socket a write that cannot complete
// (the peer stopped reading) fails after a bound instead of wedging the
// session; a serial port has no such hang.
func (s *session) writeRaw(b []byte) error {
	if d, ok := s.conn.(interface{ SetWriteDeadline(time.Time) error }); ok {
		_ = d.SetWriteDeadline(time.Now().Add(10 * time.Second))
	}
	if _, err := s.conn.Write(b); err != nil {
		return fmt.Errorf("write to radio: %w", err)
	}
	return nil
}

// startHandshake wakes the radio and asks for its configuration with a fresh nonce.
func (s *session) startHandshake(ctx context.Context) error {
	// What the radio took is published with the radio state it was sent
	// under, which the handshake is about to replace.
	s.flushAccepted(time.Now(), true)
	s.ownPos, s.mapSkipLogged = nil, false
	s.up = false
	if s.pending != nil {
		// Unconfirmed when the radio went quiet: it goes out again after
		// the handshake, with the same id.
		s.g.tx.pushFront(s.pending.req)
		s.pending = nil
	}
	s.radio = &radioState{}
	s.g.Stats.Handshakes.Add(1)
	if err := s.writeRaw(mesh.WakeBytes); err != nil {
		return err
	}
	// Give the radio's parser a moment to drop what the wake bytes interrupted.
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(100 * time.Millisecond):
	}
	for s.nonce = 0; s.nonce == 0 || s.nonce == nonceOnlyConfig || s.nonce == nonceOnlyNodes; {
		var b [4]byte
		_, _ = rand.Read(b[:])
		s.nonce = binary.LittleEndian.Uint32(b[:])
	}
	s.deadline = time.Now().Add(s.g.cfg.HandshakeTimeout)
	s.lastRx = time.Now()
	s.log.Debug("asking the radio for its configuration", "nonce", s.nonce)
	return s.write(&meshpb.ToRadio{PayloadVariant: &meshpb.ToRadio_WantConfigId{WantConfigId: s.nonce}})
}

// handle processes one message from the radio.
func (s *session) handle(ctx context.Context, m *meshpb.FromRadio) error {
	r := s.radio
	switch v := m.GetPayloadVariant().(type) {
	case *meshpb.FromRadio_MyInfo:
		r.myNum, r.rebootCount = v.MyInfo.GetMyNodeNum(), v.MyInfo.GetRebootCount()
	case *meshpb.FromRadio_NodeInfo:
		ni := v.NodeInfo
		if ni.GetNum() == r.myNum && r.myNum != 0 {
			r.self = ni.GetUser()
			r.hwModel = ni.GetUser().GetHwModel()
			s.setOwnPosition(ni.GetPosition())
		}
		s.g.nodes.heardVia(ni.GetNum(), ni.GetViaMqtt())
		if ni.GetUser() != nil {
			if rec, changed := s.g.nodes.updateUser(ni.GetNum(), ni.GetUser(), ni.GetLastHeard()); changed {
				s.g.publishNode(rec)
			}
		}
	case *meshpb.FromRadio_Metadata:
		r.firmware = v.Metadata.GetFirmwareVersion()
		if r.hwModel == 0 {
			r.hwModel = v.Metadata.GetHwModel()
		}
	case *meshpb.FromRadio_Channel:
		if i := v.Channel.GetIndex(); i >= 0 && int(i) < len(r.channels) {
			r.channels[i] = v.Channel
		}
	case *meshpb.FromRadio_Config:
		if lora := v.Config.GetLora(); lora != nil {
			r.lora = lora
		}
	case *meshpb.FromRadio_ModuleConfig:
		if mq := v.ModuleConfig.GetMqtt(); mq != nil {
			r.mqtt = mq
		}
	case *meshpb.FromRadio_ConfigCompleteId:
		if v.ConfigCompleteId != s.nonce {
			s.log.Debug("ignoring the end of an older configuration request", "nonce", v.ConfigCompleteId)
			return nil
		}
		if r.myNum == 0 {
			return fmt.Errorf("%w: no my_info in the configuration", errHandshake)
		}
		s.up, s.attempts = true, 0
		s.g.onHandshake(r)
		s.periodic(time.Now(), true)
	case *meshpb.FromRadio_Rebooted:
		s.g.up.Store(false)
		s.log.Warn("radio rebooted; handshaking again")
		return s.startHandshake(ctx)
	case *meshpb.FromRadio_QueueStatus:
		s.onQueueStatus(v.QueueStatus)
	case *meshpb.FromRadio_Packet:
		if !s.up {
			s.log.Debug("packet before the handshake completed; dropped", "from", mesh.NodeID(v.Packet.GetFrom()), "id", v.Packet.GetId())
			return nil
		}
		s.onPacket(v.Packet)
	case *meshpb.FromRadio_MqttClientProxyMessage:
		s.onProxyUplink(v.MqttClientProxyMessage)
	case *meshpb.FromRadio_LogRecord:
		s.log.Debug("radio log", "source", v.LogRecord.GetSource(), "level", v.LogRecord.GetLevel().String(), "text", v.LogRecord.GetMessage())
	case *meshpb.FromRadio_ClientNotification:
		n := v.ClientNotification
		s.log.Warn("radio notification", "level", n.GetLevel().String(), "text", n.GetMessage(), "reply_to", n.GetReplyId())
	}
	return nil
}

func (s *session) onQueueStatus(q *meshpb.QueueStatus) {
	s.queueKnown = true
	s.free = int(q.GetFree())
	p := s.pending
	if p == nil || q.GetMeshPacketId() != p.wireID {
		return
	}
	if q.GetRes() != 0 {
		s.sendFailed(meshpb.Routing_BAD_REQUEST, fmt.Sprintf("radio refused the packet (code %d)", q.GetRes()))
		return
	}
	s.pending = nil
	s.g.Stats.Sent.Add(1)
	s.log.Debug("radio accepted packet", "id", p.wireID, "origin", p.req.origin, "request", p.req.id, "free", s.free)
	s.onAccepted(p.pkt, time.Now())
	s.g.publishResult(p.req, meshpb.Routing_NONE)
}

// sendTimedOut handles a packet the radio did not confirm. A radio that has
// never sent a QueueStatus predates flow control: the packet was most likely
// sent, and later ones go out without waiting.
func (s *session) sendTimedOut() {
	if s.queueKnown {
		s.sendFailed(meshpb.Routing_TIMEOUT, "radio did not confirm the packet in time")
		return
	}
	s.noFlowCtl = true
	p := s.pending
	s.pending = nil
	s.g.Stats.Sent.Add(1)
	s.onAccepted(p.pkt, time.Now())
	s.log.Info("radio does not confirm packets (firmware without flow control); sending without waiting")
	s.g.publishResult(p.req, meshpb.Routing_NONE)
}

func (s *session) sendFailed(reason meshpb.Routing_Error, why string) {
	p := s.pending
	s.pending = nil
	s.g.Stats.SendFailed.Add(1)
	s.log.Warn("send failed", "id", p.wireID, "origin", p.req.origin, "request", p.req.id, "reason", reason.String(), "detail", why)
	s.g.report(p.req, reason, 0, why)
}

// trySend writes the next queued packet if the radio can take it now: the
// link is up, nothing awaits confirmation, the radio's queue has room, and
// the port's pacing allows it. Otherwise it arms pace for the earliest time.
func (s *session) trySend(pace *time.Timer) error {
	if !s.up || s.pending != nil || (s.free <= 0 && !s.noFlowCtl) {
		return nil
	}
	req := s.g.tx.peek()
	if req == nil {
		s.airHeld = nil
		s.g.setAirtimeBlocked(false, time.Time{})
		return nil
	}
	if req.downlink != nil {
		if !s.g.tx.pop(req) {
			return s.trySend(pace) // amended meanwhile
		}
		if s.g.resolveDownlink(req) {
			s.g.tx.pushFront(req)
		}
		return s.trySend(pace)
	}
	if req.chName != "" {
		idx, err := s.radio.channelIndex(req.chName)
		if !s.g.tx.pop(req) {
			return s.trySend(pace)
		}
		if err != nil {
			s.g.refuse(req, meshpb.Routing_NO_CHANNEL, err)
		} else {
			req.channel, req.chName = idx, ""
			s.g.tx.pushFront(req)
		}
		return s.trySend(pace)
	}
	now := time.Now()
	if w := s.g.pace.wait(req.data.GetPortnum(), now, s.g.air.slowdown()); w > 0 {
		pace.Reset(w)
		return nil
	}
	cost := s.g.air.cost(req.data)
	if w := s.g.air.wait(now, cost); w == mesh.NeverFits {
		if !s.g.tx.pop(req) {
			return s.trySend(pace)
		}
		s.g.refuse(req, meshpb.Routing_DUTY_CYCLE_LIMIT, fmt.Errorf("a packet of %v on air can never fit the airtime budget", cost))
		return s.trySend(pace)
	} else if w > 0 {
		s.airHeld = req
		s.g.setAirtimeBlocked(true, now.Add(w))
		pace.Reset(w)
		return nil
	}
	if req != s.airHeld {
		s.g.setAirtimeBlocked(false, time.Time{})
	}
	s.airHeld = nil
	if !s.g.tx.pop(req) {
		return s.trySend(pace) // amended since peek: send what is there now
	}
	if req.wireID == 0 {
		req.wireID = s.g.ids.next()
	}
	wireID := req.wireID
	pkt := &meshpb.MeshPacket{
		To: req.to, Channel: req.channel, Id: wireID, HopLimit: s.radio.hopLimit(), WantAck: req.wantAck(),
		PayloadVariant: &meshpb.MeshPacket_Decoded{Decoded: req.data},
	}
	if err := s.write(&meshpb.ToRadio{PayloadVariant: &meshpb.ToRadio_Packet{Packet: pkt}}); err != nil {
		s.g.tx.pushFront(req)
		return err
	}
	s.g.pace.sent(req.data.GetPortnum(), now)
	s.g.air.spend(now, cost)
	s.remember(wireID, req)
	s.g.wires.add(req.origin, req.id, wireID) // for an amend that comes too late
	s.log.Debug("packet to radio", "id", wireID, "port", req.data.GetPortnum().String(), "to", mesh.NodeID(req.to),
		"channel", req.channel, "origin", req.origin, "waited", now.Sub(req.queued).Round(time.Millisecond))
	if s.noFlowCtl {
		s.g.Stats.Sent.Add(1)
		s.onAccepted(pkt, now)
		s.g.publishResult(req, meshpb.Routing_NONE)
		return nil
	}
	s.free--
	s.pending = &inflight{req: req, wireID: wireID, deadline: now.Add(s.g.cfg.SendTimeout), pkt: pkt}
	return nil
}

// remember keeps the last wire ids, so routing ACK/NAKs that arrive later
// can be reported against the request that caused them.
func (s *session) remember(id uint32, r *request) {
	const keep = 64
	s.sentIDs[id] = r
	s.sentOrder = append(s.sentOrder, id)
	if len(s.sentOrder) > keep {
		delete(s.sentIDs, s.sentOrder[0])
		s.sentOrder = s.sentOrder[1:]
	}
}
