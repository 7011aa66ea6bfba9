package xmppgw

import (
	"cmp"
	"slices"
	"strings"

	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// radios is what the XMPP side knows of the bridge's radios: those of the
// radio sides on its broker (local: their radio record and state), and
// those the other bridges it trusts say, in their room presence, they send
// through; and which of them are on one mesh. Radios are one mesh when the
// operator gave them the same mesh name (--mesh), when a radio of this
// gateway heard another on air (a packet from the other radio's own node,
// or a packet both heard with the same sender and id), or when a trusted
// bridge says its own radios heard each other. Until then each radio counts
// as a mesh of its own, so what the room says reaches every mesh (at worst
// the first message goes out twice on a mesh that turns out to be one).
// Guarded by the gateway's mu.
type radios struct {
	byID     map[string]*radioSide
	heard    map[[2]string]bool            // pairs of radios this gateway heard share a mesh
	peerSaid map[string]map[[2]string]bool // occupant -> pairs that bridge says share a mesh
}

type radioSide struct {
	id     string // gateway id: the radio's node id
	num    uint32
	local  bool // a radio side on this gateway's broker published its radio record
	status topics.StatusRecord
	record topics.RadioRecord
	mesh   string          // the operator's name for its mesh, from the record or a peer
	peers  map[string]bool // occupants (room/nick) of other bridges that send through it
}

func newRadios() radios {
	return radios{byID: map[string]*radioSide{}, heard: map[[2]string]bool{}, peerSaid: map[string]map[[2]string]bool{}}
}

func (rs *radios) side(id string) *radioSide {
	s := rs.byID[id]
	if s == nil {
		s = &radioSide{id: id, num: nodeNum(id), peers: map[string]bool{}}
		rs.byID[id] = s
	}
	return s
}

// known: a radio counts once its radio side published its record (a
// status alone may be a will for a radio the side no longer uses), or
// while another bridge says it sends through it.
func (s *radioSide) known() bool { return s.local || len(s.peers) > 0 }

// onlineIn reports whether the radio can send for room: a local radio by
// its status, another bridge's while that bridge is in the room.
func (s *radioSide) onlineIn(room string) bool {
	if s.local {
		return s.status.State == topics.LinkOnline
	}
	for occupant := range s.peers {
		if occupantRoom(occupant) == room {
			return true
		}
	}
	return false
}

func (s *radioSide) localOnline() bool { return s.local && s.status.State == topics.LinkOnline }

func occupantRoom(occupant string) string {
	room, _, _ := strings.Cut(occupant, "/")
	return room
}

// setStatus records a radio side's state and reports whether its radio
// has just come online.
func (rs *radios) setStatus(id string, st topics.StatusRecord) (cameOnline bool) {
	s := rs.side(id)
	was := s.localOnline()
	s.status = st
	return s.localOnline() && !was
}

// setRecord records a radio side's radio record and reports whether its
// radio has just come online (its status arrived first).
func (rs *radios) setRecord(id string, rec topics.RadioRecord) (cameOnline bool) {
	s := rs.side(id)
	was := s.localOnline()
	s.local, s.record, s.mesh = true, rec, rec.Mesh
	if rec.Num != 0 {
		s.num = rec.Num
	}
	return s.localOnline() && !was
}

// forget drops a radio side's radio that it cleared (it was swapped for
// another).
func (rs *radios) forget(id string) {
	if s := rs.byID[id]; s != nil && len(s.peers) > 0 {
		s.local, s.status, s.record = false, topics.StatusRecord{}, topics.RadioRecord{}
		return
	}
	delete(rs.byID, id)
}

// anyOnline reports whether some radio of this gateway is online.
func (rs *radios) anyOnline() bool {
	for _, s := range rs.byID {
		if s.localOnline() {
			return true
		}
	}
	return false
}

// isBridgeRadio reports whether num is the node of a radio this or a
// trusted bridge sends through: what it transmits was said in a room, or
// relayed from another mesh, and is never posted back.
func (rs *radios) isBridgeRadio(num uint32) (string, bool) {
	for _, s := range rs.byID {
		if s.num == num && s.known() {
			return s.id, true
		}
	}
	return "", false
}

// heardOnAir records that this gateway's radio a heard radio b's node, or
// the same packet as b: they are on one mesh. It reports whether that is
// news.
func (rs *radios) heardOnAir(a, b string) bool {
	if a == b {
		return false
	}
	k := pair(a, b)
	if rs.heard[k] {
		return false
	}
	rs.heard[k] = true
	return true
}

func pair(a, b string) [2]string { return [2]string{min(a, b), max(a, b)} }

// meshes groups the known radios by mesh, each group sorted by node
// number, the groups by their first radio's.
func (rs *radios) meshes() [][]*radioSide {
	parent := map[string]string{}
	var find func(string) string
	find = func(x string) string {
		if p, ok := parent[x]; ok && p != x {
			r := find(p)
			parent[x] = r
			return r
		}
		parent[x] = x
		return x
	}
	union := func(a, b string) {
		if rs.byID[a] != nil && rs.byID[b] != nil && rs.byID[a].known() && rs.byID[b].known() {
			parent[find(a)] = find(b)
		}
	}
	named := map[string]string{}
	for id, s := range rs.byID {
		if !s.known() {
			continue
		}
		find(id)
		if n := s.mesh; n != "" {
			if other, ok := named[n]; ok {
				union(id, other)
			} else {
				named[n] = id
			}
		}
	}
	for k := range rs.heard {
		union(k[0], k[1])
	}
	for _, pairs := range rs.peerSaid {
		for k := range pairs {
			union(k[0], k[1])
		}
	}
	groups := map[string][]*radioSide{}
	for id, s := range rs.byID {
		if s.known() {
			root := find(id)
			groups[root] = append(groups[root], s)
		}
	}
	out := make([][]*radioSide, 0, len(groups))
	for _, g := range groups {
		slices.SortFunc(g, func(a, b *radioSide) int { return cmp.Compare(a.num, b.num) })
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b []*radioSide) int { return cmp.Compare(a[0].num, b[0].num) })
	return out
}

func has(g []*radioSide, id string) bool {
	return slices.ContainsFunc(g, func(s *radioSide) bool { return s.id == id })
}

// transmitters picks, for every mesh that skip does not rule out, the
// radio of this gateway that sends what room says: of the mesh's radios
// that can send for the room, that with the lowest node number, so that
// every XMPP side and every bridge in the room picks the same one and a
// radio leaving hands over to the next at once. A mesh whose pick is
// another bridge's radio is left to that bridge. When none of a mesh can
// send, its lowest-numbered radio of this gateway keeps the request until
// it is back.
func (rs *radios) transmitters(room string, skip func(mesh []*radioSide) bool) []string {
	var out []string
	for _, g := range rs.meshes() {
		if skip != nil && skip(g) {
			continue
		}
		if pick := elected(g, room); pick != nil {
			if pick.local {
				out = append(out, pick.id)
			}
			continue
		}
		for _, s := range g {
			if s.local {
				out = append(out, s.id)
				break
			}
		}
	}
	return out
}

// relayTargets picks the radios that carry a text heard by this gateway's
// radio heardBy to the other meshes: none when heardBy is not known.
func (rs *radios) relayTargets(room, heardBy string) []string {
	if s := rs.byID[heardBy]; s == nil || !s.known() {
		return nil
	}
	return rs.transmitters(room, func(g []*radioSide) bool { return has(g, heardBy) })
}

// peerRelayTargets picks the radios that carry a text another bridge
// (occupant) posted from its mesh to this gateway's meshes that are not
// that bridge's.
func (rs *radios) peerRelayTargets(room, occupant string) []string {
	return rs.transmitters(room, func(g []*radioSide) bool {
		return slices.ContainsFunc(g, func(s *radioSide) bool { return s.peers[occupant] })
	})
}

// elected is the radio of a mesh (sorted by node number) with the lowest
// node number that can send for room, nil when none can.
func elected(mesh []*radioSide, room string) *radioSide {
	for _, s := range mesh {
		if s.onlineIn(room) {
			return s
		}
	}
	return nil
}

// deferTo reports whether a text heard by this gateway's radio heardBy is
// better posted by another bridge in the room, where this gateway is the
// occupant self: one that sends through a radio on the same mesh with a
// lower node number, or another XMPP side on the same broker (it names
// the same radio) whose occupant sorts first. This gateway then waits a
// moment, and posts only if that bridge has not.
func (rs *radios) deferTo(heardBy, self string) bool {
	room := occupantRoom(self)
	for _, g := range rs.meshes() {
		if !has(g, heardBy) {
			continue
		}
		pick := elected(g, room)
		if pick == nil {
			return false
		}
		if !pick.local {
			return true
		}
		for occupant := range pick.peers {
			if occupantRoom(occupant) == room && occupant < self {
				return true
			}
		}
		return false
	}
	return false
}

// peerSays records what a trusted bridge in a room (occupant) says it
// sends through, replacing what it said before; nil when it left. It does
// not rename the mesh of this gateway's own radios.
func (rs *radios) peerSays(occupant string, adv *radiosAdvert) {
	rs.dropPeer(occupant)
	if adv == nil {
		return
	}
	said := map[[2]string]bool{}
	for _, a := range adv.Radios {
		if nodeNum(a.ID) == 0 {
			continue
		}
		s := rs.side(a.ID)
		s.peers[occupant] = true // of a local radio: another XMPP side on this broker
		if !s.local {
			s.mesh = a.Mesh
		}
		for i, w := range strings.Fields(a.With) {
			if i == maxAdvertRadios {
				break
			}
			if nodeNum(w) != 0 && w != a.ID {
				said[pair(a.ID, w)] = true
			}
		}
	}
	if len(said) > 0 {
		rs.peerSaid[occupant] = said
	}
}

// dropPeer forgets what an occupant said.
func (rs *radios) dropPeer(occupant string) {
	delete(rs.peerSaid, occupant)
	for id, s := range rs.byID {
		delete(s.peers, occupant)
		if !s.known() {
			delete(rs.byID, id)
		}
	}
}

// dropRoomPeers forgets what the bridges in room said: this gateway is
// joining it (again), and hears them anew.
func (rs *radios) dropRoomPeers(room string) {
	for occupant := range rs.peerOccupants() {
		if occupantRoom(occupant) == room {
			rs.dropPeer(occupant)
		}
	}
}

func (rs *radios) peerOccupants() map[string]bool {
	out := map[string]bool{}
	for _, s := range rs.byID {
		for o := range s.peers {
			out[o] = true
		}
	}
	for o := range rs.peerSaid {
		out[o] = true
	}
	return out
}

// clearPeers forgets what other bridges said: a new connection hears it
// again as it joins the rooms.
func (rs *radios) clearPeers() {
	for o := range rs.peerOccupants() {
		rs.dropPeer(o)
	}
}

// peerMesh returns the one mesh another bridge's radios are on, nil when
// they are on several (or none): only then does a text it posted tell
// which mesh it came from.
func (rs *radios) peerMesh(occupant string) []*radioSide {
	var found []*radioSide
	for _, g := range rs.meshes() {
		if slices.ContainsFunc(g, func(s *radioSide) bool { return s.peers[occupant] }) {
			if found != nil {
				return nil
			}
			found = g
		}
	}
	return found
}

// advert is what this gateway says, in its room presence, it sends
// through: its online radios, each with its mesh's name and the radios
// this gateway heard share its mesh. Canonical, so a change shows as a
// different value.
func (rs *radios) advert() *radiosAdvert {
	adv := &radiosAdvert{}
	for _, g := range rs.meshes() {
		for _, s := range g {
			if !s.localOnline() {
				continue
			}
			var with []string
			for _, o := range g {
				if o != s && rs.heard[pair(s.id, o.id)] {
					with = append(with, o.id)
				}
			}
			adv.Radios = append(adv.Radios, advertRadio{ID: s.id, Mesh: s.mesh, With: strings.Join(with, " ")})
		}
	}
	return adv
}

// describe lists this gateway's radios and the other bridges in room, for
// !status.
func (rs *radios) describe(room string) string {
	var parts []string
	peers := map[string][]string{}
	for _, g := range rs.meshes() {
		for _, s := range g {
			for o := range s.peers {
				if occupantRoom(o) == room {
					_, nick, _ := strings.Cut(o, "/")
					peers[nick] = append(peers[nick], s.id)
				}
			}
			if !s.local {
				continue
			}
			state := "disconnected"
			if s.localOnline() {
				state = "connected"
			}
			if s.status.AirtimeBlocked {
				state += " (its airtime share is spent for now: messages to the mesh wait)"
			}
			parts = append(parts, "radio "+s.id+" is "+state)
		}
	}
	out := "No radio has reported to the bridge yet."
	if len(parts) > 0 {
		out = strings.ToUpper(parts[0][:1]) + strings.Join(parts, "; ")[1:] + "."
	}
	if len(peers) > 0 {
		var list []string
		for nick, ids := range peers {
			list = append(list, nick+" (radio "+strings.Join(ids, ", ")+")")
		}
		slices.Sort(list)
		out += " Other bridges here: " + strings.Join(list, "; ") + "."
	}
	return out
}

// nodeNum parses a "!xxxxxxxx" node id, exactly as the bridge writes one;
// 0 when it is not one.
func nodeNum(id string) uint32 {
	n, err := mesh.ParseNodeID(id)
	if err != nil || mesh.NodeID(n) != id {
		return 0
	}
	return n
}
