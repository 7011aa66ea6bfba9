package xmppgw

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// The bridge's own commands, and what it keeps of the mesh's nodes to
// answer them: !status, !nodes and !help in a room or a one-to-one chat;
// !nodes, !who and !help in a direct message from a node to the bridge's
// radio, answered on the mesh.

// Bounds on what the bridge keeps of heard nodes and says of them.
const (
	maxHeard = 1024
	// nodesRecent is how far back !nodes looks; a screenful lists at
	// most nodesListed.
	nodesRecent = 24 * time.Hour
	nodesListed = 15
	// statusRecent is what the presence status counts nodes over.
	statusRecent = time.Hour
	// meshReplyPackets bounds an answer on the mesh: one or two packets.
	meshReplyPackets = 2
)

// heardNode is what the packets heard from a node say about it.
type heardNode struct {
	at      time.Time
	via     string  // the radio that heard it last
	hops    int     // -1 when unknown
	snr     float32 // valid when hasSNR
	hasSNR  bool
	battery uint32 // percent; 101 on external power; 0 unknown
}

// observeNode keeps what a packet heard on the mesh says about its sender,
// whatever its kind: for !nodes and the presence status.
func (g *Gateway) observeNode(env *meshpb.ServiceEnvelope) {
	p := env.GetPacket()
	from := p.GetFrom()
	if from == 0 || from == mesh.Broadcast {
		return
	}
	now := time.Now()
	g.dm.mu.Lock()
	defer g.dm.mu.Unlock()
	h := g.dm.heard[from]
	if h == nil {
		if len(g.dm.heard) >= maxHeard {
			var oldest uint32
			for n, o := range g.dm.heard {
				if oldest == 0 || o.at.Before(g.dm.heard[oldest].at) {
					oldest = n
				}
			}
			delete(g.dm.heard, oldest)
		}
		h = &heardNode{hops: -1}
		g.dm.heard[from] = h
	}
	h.at, h.via = now, env.GetGatewayId()
	if p.GetViaMqtt() {
		return // neither hops nor signal tell anything of the air
	}
	h.hops = -1
	if start, limit := p.GetHopStart(), p.GetHopLimit(); start != 0 && start >= limit {
		h.hops = int(start - limit)
	}
	if p.GetRxSnr() != 0 {
		h.snr, h.hasSNR = p.GetRxSnr(), true
	}
	d := p.GetDecoded()
	if d.GetPortnum() == meshpb.PortNum_TELEMETRY_APP {
		var tel meshpb.Telemetry
		if proto.Unmarshal(d.GetPayload(), &tel) == nil {
			if m := tel.GetDeviceMetrics(); m != nil && m.BatteryLevel != nil {
				h.battery = m.GetBatteryLevel()
			}
		}
	}
}

// seenNode is a node as !nodes lists it.
type seenNode struct {
	nodeName
	at   time.Time
	info heardNode // the zero value (hops 0) when only the record knows it
	live bool      // info is from packets heard
}

// recentNodes lists the nodes heard since since, newest first, without the
// bridges' own radios.
func (g *Gateway) recentNodes(since time.Time) []seenNode {
	byNum := map[uint32]*seenNode{}
	g.mu.Lock()
	for _, n := range g.nodes {
		num := cmp.Or(n.Num, nodeNum(n.ID))
		if _, bridge := g.radios.isBridgeRadio(num); bridge || num == 0 {
			continue
		}
		byNum[num] = &seenNode{nodeName: nodeName{num: num, short: n.ShortName, long: n.LongName}, at: time.Unix(int64(n.LastHeard), 0)}
	}
	bridge := map[uint32]bool{}
	g.dm.mu.Lock()
	for num, h := range g.dm.heard {
		if _, b := g.radios.isBridgeRadio(num); b {
			bridge[num] = true
			continue
		}
		s := byNum[num]
		if s == nil {
			s = &seenNode{nodeName: nodeName{num: num}}
			byNum[num] = s
		}
		s.info, s.live = *h, true
		if h.at.After(s.at) {
			s.at = h.at
		}
	}
	g.dm.mu.Unlock()
	g.mu.Unlock()
	var out []seenNode
	for num, s := range byNum {
		if !bridge[num] && !s.at.Before(since) {
			out = append(out, *s)
		}
	}
	slices.SortFunc(out, func(a, b seenNode) int { return cmp.Or(b.at.Compare(a.at), cmp.Compare(a.num, b.num)) })
	return out
}

// ago says how long ago t was, briefly.
func ago(t, now time.Time) string {
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return fmt.Sprintf("%d min ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h ago", int(d/time.Hour))
	}
	return fmt.Sprintf("%d days ago", int(d/(24*time.Hour)))
}

// agoShort is ago for the mesh, where every byte costs airtime.
func agoShort(t, now time.Time) string {
	d := now.Sub(t)
	switch {
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

// nodesText answers !nodes in a room or a one-to-one chat: at most a
// screenful.
func (g *Gateway) nodesText(now time.Time) string {
	nodes := g.recentNodes(now.Add(-nodesRecent))
	if len(nodes) == 0 {
		return "No node heard in the last 24 hours."
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "Nodes heard in the last 24 hours (%d), newest first:", len(nodes))
	for _, n := range nodes[:min(len(nodes), nodesListed)] {
		sb.WriteString("\n• ")
		if n.short != "" {
			sb.WriteString(n.short + " · ")
		}
		if n.long != "" {
			sb.WriteString(n.long + " · ")
		}
		sb.WriteString(mesh.NodeID(n.num) + " — " + ago(n.at, now))
		if n.live {
			switch {
			case n.info.hops == 0:
				sb.WriteString(", direct")
			case n.info.hops == 1:
				sb.WriteString(", 1 hop")
			case n.info.hops > 1:
				fmt.Fprintf(&sb, ", %d hops", n.info.hops)
			}
			if n.info.hasSNR {
				fmt.Fprintf(&sb, ", SNR %.1f dB", n.info.snr)
			}
			switch {
			case n.info.battery > 100:
				sb.WriteString(", on external power")
			case n.info.battery > 0:
				fmt.Fprintf(&sb, ", battery %d%%", n.info.battery)
			}
		}
	}
	if rest := len(nodes) - nodesListed; rest > 0 {
		fmt.Fprintf(&sb, "\n… and %d more.", rest)
	}
	return sb.String()
}

// helpText answers !help in a room (dm false) or a one-to-one chat.
func (g *Gateway) helpText(dm bool) string {
	var sb strings.Builder
	sb.WriteString("Bridge commands (never sent to the mesh):\n• !status — the bridge's radios\n• !nodes — the mesh nodes heard recently\n• !help — this list")
	if dm {
		sb.WriteString("\nTo write to one mesh node, start with its short name, long name or id: @ANA see you at 6, @\"Ana's T-Beam\" hi, @!a1b2c3d4 hi. A message without a name goes to the node you last wrote to or heard from. A ✓ receipt means the node acknowledged it.")
	} else {
		fmt.Fprintf(&sb, "\nTo write to one mesh node, message %s directly: @ANA see you at 6 (a short name, a long name or a !id).", g.cfg.JID.Bare())
	}
	return sb.String()
}

// commandReply answers one of the bridge's commands; room is the room it
// was said in ("" in a one-to-one chat), nick who said it.
func (g *Gateway) commandReply(cmd, room, nick string, dm bool) string {
	word, _, _ := strings.Cut(cmd, " ")
	switch word {
	case "status":
		if room == "" && len(g.cfg.Rooms) > 0 {
			room = g.cfg.Rooms[0].JID.String()
		}
		g.mu.Lock()
		radios := g.radios.describe(room)
		g.mu.Unlock()
		return radios
	case "nodes":
		return g.nodesText(time.Now())
	case "help":
		return g.helpText(dm)
	}
	return fmt.Sprintf("%s: unknown bridge command !%s (known: !status, !nodes, !help). Commands are not sent to the mesh.", nick, word)
}

// answerOnMesh answers a command a node sent to the bridge's radio, as a
// direct message from that radio, in one or two packets. A node that asks
// too often gets no answer: the mesh's airtime is shared.
func (g *Gateway) answerOnMesh(radio string, p *meshpb.MeshPacket, cmd string) {
	from := mesh.NodeID(p.GetFrom())
	if p.GetViaMqtt() {
		// Not from this mesh: anyone on the internet could ask, under any
		// node's name, and the answer would take this mesh's airtime.
		g.log.Info("a command that came through MQTT is not answered on the air", "from", from)
		return
	}
	// All nodes together, then each: a sender id is easy to make up.
	if _, ok := g.dm.allow("node:*", time.Now(), 2*g.cfg.DMBurst, g.cfg.DMInterval); !ok {
		g.log.Info("nodes ask the bridge too often; not answered", "from", from)
		return
	}
	if _, ok := g.dm.allow("node:"+from, time.Now(), g.cfg.DMBurst, g.cfg.DMInterval); !ok {
		g.log.Info("a node asks the bridge too often; not answered", "from", from)
		return
	}
	word, _, _ := strings.Cut(cmd, " ")
	now := time.Now()
	var lines []string
	switch word {
	case "nodes":
		var heard []string
		for _, n := range g.recentNodes(now.Add(-statusRecent)) {
			if n.num != p.GetFrom() {
				heard = append(heard, n.shortLabel()+" "+agoShort(n.at, now))
			}
		}
		lines = append([]string{fmt.Sprintf("Heard in 1h (%d):", len(heard))}, heard...)
		if len(heard) == 0 {
			lines = []string{"Heard in 1h: no node but you"}
		}
	case "who":
		lines = g.whoLines()
	default:
		lines = []string{"Bridge: !nodes heard nodes, !who people in the chat room, !help this. Other direct messages go to the XMPP user you last heard from here."}
	}
	texts := packLines(lines, topics.MaxTextBytes, meshReplyPackets)
	for i, t := range texts {
		req := topics.SendRequest{Origin: topics.OriginXMPP, ID: requestID(fmt.Sprintf("mesh-cmd:%s:%08x", from, p.GetId()), i), To: p.GetFrom(),
			Data: &meshpb.Data{Portnum: meshpb.PortNum_TEXT_MESSAGE_APP, Payload: []byte(t)}}
		if err := g.publishRequest(radio, req); err != nil {
			g.log.Warn("could not answer a node's command", "from", from, "err", err)
			return
		}
	}
	g.log.Info("answered a node's command on the mesh", "from", from, "command", word, "packets", len(texts))
}

// whoLines lists the bridged rooms' occupants, for !who on the mesh.
func (g *Gateway) whoLines() []string {
	g.dm.mu.Lock()
	defer g.dm.mu.Unlock()
	var lines []string
	for _, r := range g.cfg.Rooms {
		var nicks []string
		for _, o := range g.dm.occupants[r.JID.String()] {
			nicks = append(nicks, o.nick)
		}
		slices.Sort(nicks)
		if len(nicks) == 0 {
			lines = append(lines, r.JID.Localpart()+" (0): nobody")
			continue
		}
		lines = append(lines, r.JID.Localpart()+fmt.Sprintf(" (%d):", len(nicks)))
		lines = append(lines, nicks...)
	}
	return lines
}

// packLines joins items into at most packets texts of at most size bytes:
// an item ending in a colon heads those after it, which are separated by
// commas; a new heading starts a new line. What does not fit is counted
// at the end ("+3").
func packLines(items []string, size, packets int) []string {
	var out []string
	cur := ""
	for i, it := range items {
		it = truncateUTF8(it, size-8)
		sep := ", "
		switch {
		case cur == "":
			sep = ""
		case strings.HasSuffix(items[i-1], ":"):
			sep = " "
		case strings.HasSuffix(it, ":"):
			sep = "\n"
		}
		if len(cur)+len(sep)+len(it) <= size {
			cur += sep + it
			continue
		}
		if len(out)+1 == packets {
			more := fmt.Sprintf(" +%d", len(items)-i)
			for len(cur)+len(more) > size {
				_, n := utf8.DecodeLastRuneInString(cur)
				cur = cur[:len(cur)-n]
			}
			return append(out, cur+more)
		}
		out = append(out, cur)
		cur = it
	}
	if cur != "" {
		out = append(out, cur)
	}
	return out
}

// truncateUTF8 cuts s to at most n bytes, never inside a rune.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// sentStatus is the status a room last saw in the bridge's presence.
type sentStatus struct {
	text string
	at   time.Time
}

// presenceStatus says, in the bridge's room presence, how its radios are
// and how many nodes were heard in the last hour.
func (g *Gateway) presenceStatus(now time.Time) string {
	g.mu.Lock()
	online, local, blocked := 0, 0, false
	for _, s := range g.radios.byID {
		if !s.local {
			continue
		}
		local++
		if s.localOnline() {
			online++
			blocked = blocked || s.status.AirtimeBlocked
		}
	}
	g.mu.Unlock()
	var radio string
	switch {
	case local == 0:
		radio = "📡 No radio yet"
	case online == 0 && local == 1:
		radio = "📡 Radio disconnected"
	case online == 0:
		radio = "📡 Radios disconnected"
	case local == 1:
		radio = "📡 Radio online"
	case online == local:
		radio = fmt.Sprintf("📡 %d radios online", online)
	default:
		radio = fmt.Sprintf("📡 %d of %d radios online", online, local)
	}
	if blocked {
		radio += " (airtime spent for now)"
	}
	n := len(g.recentNodes(now.Add(-statusRecent)))
	nodes := fmt.Sprintf("%d nodes heard in the last hour", n)
	if n == 1 {
		nodes = "1 node heard in the last hour"
	}
	return radio + " · " + nodes
}

// statusFor returns the status to put in a presence to room now, and
// whether it is due: it changed since the room last saw it, and that was
// at least Config.StatusInterval ago (or force: a presence goes out anyway).
func (g *Gateway) statusFor(room string, now time.Time, force bool) (string, bool) {
	text := g.presenceStatus(now)
	g.dm.mu.Lock()
	defer g.dm.mu.Unlock()
	last, ok := g.dm.status[room]
	due := force || !ok || (text != last.text && now.Sub(last.at) >= g.cfg.StatusInterval)
	if !due {
		return last.text, false
	}
	if !ok || text != last.text {
		g.dm.status[room] = sentStatus{text: text, at: now}
	}
	return text, true
}
