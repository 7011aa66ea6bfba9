package xmppgw

import (
	"cmp"
	"slices"
	"strings"

	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// radios is what the XMPP side knows of the bridge's radios: those of the
// radio sides on its broker (local: their state and radio record), and
// those other bridges in its rooms say they send through (in their room
// presence), and which of them are on one mesh. Radios are one mesh when
// the operator gave them the same mesh name (--mesh), when one of them
// heard the other on air (a packet from the other radio's own node, or a
// packet both heard with the same sender and id), or when a bridge that
// knows says so. Until then each radio counts as a mesh of its own, so
// nothing said in a room can miss a mesh (at worst the first message goes
// out on one mesh twice). Guarded by the gateway's mu.
type radios struct {
	byID map[string]*radioSide
	same map[[2]string]bool // pairs of gateway ids heard to share a mesh
}

type radioSide struct {
	id     string // gateway id: the radio's node id
	num    uint32
	local  bool // a radio side on this gateway's broker reported it
	status topics.StatusRecord
	record topics.RadioRecord
	mesh   string          // the operator's name for its mesh, from the record or a peer
	peers  map[string]bool // occupants (other bridges) that say they send through it
}

func newRadios() radios {
	return radios{byID: map[string]*radioSide{}, same: map[[2]string]bool{}}
}

func (rs *radios) side(id string) *radioSide {
	s := rs.byID[id]
	if s == nil {
		s = &radioSide{id: id, num: nodeNum(id), peers: map[string]bool{}}
		rs.byID[id] = s
	}
	return s
}

// setStatus records a radio side's state and reports whether the radio
// has just come online.
func (rs *radios) setStatus(id string, st topics.StatusRecord) (cameOnline bool) {
	s := rs.side(id)
	s.local = true
	was := s.online()
	s.status = st
	return s.online() && !was
}

func (rs *radios) setRecord(id string, rec topics.RadioRecord) {
	s := rs.side(id)
	s.local, s.record, s.mesh = true, rec, rec.Mesh
	if rec.Num != 0 {
		s.num = rec.Num
	}
}

// forget drops a radio side that cleared its records (its radio was
// swapped for another).
func (rs *radios) forget(id string) { delete(rs.byID, id) }

// online: a local radio by its status; another bridge's while that bridge
// is in a room and says so.
func (s *radioSide) online() bool {
	if s.local {
		return s.status.State == topics.LinkOnline
	}
	return len(s.peers) > 0
}

// anyOnline reports whether some radio of this gateway is online.
func (rs *radios) anyOnline() bool {
	for _, s := range rs.byID {
		if s.local && s.online() {
			return true
		}
	}
	return false
}

// isBridgeRadio reports whether num is the node of a radio this or another
// bridge sends through: what it transmits was said in a room, or relayed
// from another mesh, and is never posted back.
func (rs *radios) isBridgeRadio(num uint32) (string, bool) {
	for _, s := range rs.byID {
		if s.num == num {
			return s.id, true
		}
	}
	return "", false
}

// heardOnAir records that radio a heard radio b's node, or the same packet
// as b: they are on one mesh. It reports whether that is news.
func (rs *radios) heardOnAir(a, b string) bool {
	if a == b {
		return false
	}
	k := [2]string{min(a, b), max(a, b)}
	if rs.same[k] {
		return false
	}
	rs.same[k] = true
	return true
}

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
	union := func(a, b string) { parent[find(a)] = find(b) }
	named := map[string]string{}
	for id, s := range rs.byID {
		find(id)
		if n := s.mesh; n != "" {
			if other, ok := named[n]; ok {
				union(id, other)
			} else {
				named[n] = id
			}
		}
	}
	for k := range rs.same {
		if rs.byID[k[0]] != nil && rs.byID[k[1]] != nil {
			union(k[0], k[1])
		}
	}
	groups := map[string][]*radioSide{}
	for id, s := range rs.byID {
		root := find(id)
		groups[root] = append(groups[root], s)
	}
	out := make([][]*radioSide, 0, len(groups))
	for _, g := range groups {
		slices.SortFunc(g, func(a, b *radioSide) int { return cmp.Compare(a.num, b.num) })
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b []*radioSide) int { return cmp.Compare(a[0].num, b[0].num) })
	return out
}

// meshOf names the mesh of radio id by its lowest-numbered radio.
func (rs *radios) meshOf(id string) string {
	for _, g := range rs.meshes() {
		for _, s := range g {
			if s.id == id {
				return g[0].id
			}
		}
	}
	return id
}

// transmitters picks, for every mesh but the one named except, the radio
// of this gateway that sends what a room says: of the mesh's online
// radios, that with the lowest node number, so that every XMPP side and
// every bridge in the room picks the same one and a radio leaving hands
// over to the next at once. A mesh whose pick is another bridge's radio is
// left to that bridge. When none of a mesh is online, its lowest-numbered
// radio of this gateway keeps the request until it is back.
func (rs *radios) transmitters(except string) []string {
	var out []string
	for _, g := range rs.meshes() {
		if g[0].id == except {
			continue
		}
		if pick := elected(g); pick != nil {
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

// elected is the online radio of a mesh (sorted by node number) with the
// lowest node number, nil when none is online.
func elected(mesh []*radioSide) *radioSide {
	for _, s := range mesh {
		if s.online() {
			return s
		}
	}
	return nil
}

// deferTo reports whether a text heard by this gateway's radio heardBy is
// better posted by another bridge: one in the room sends through an online
// radio on the same mesh with a lower node number. This gateway then waits
// a moment, and posts only if that bridge has not.
func (rs *radios) deferTo(heardBy string) bool {
	for _, g := range rs.meshes() {
		for _, s := range g {
			if s.id == heardBy {
				pick := elected(g)
				return pick != nil && !pick.local
			}
		}
	}
	return false
}

// peerSays records what another bridge in a room (occupant) says it sends
// through, replacing what it said before; nil when it left.
func (rs *radios) peerSays(occupant string, adv *radiosAdvert) {
	for id, s := range rs.byID {
		delete(s.peers, occupant)
		if !s.local && len(s.peers) == 0 {
			delete(rs.byID, id)
		}
	}
	if adv == nil {
		return
	}
	for _, a := range adv.Radios {
		if nodeNum(a.ID) == 0 {
			continue
		}
		s := rs.side(a.ID)
		s.peers[occupant] = true
		if !s.local {
			s.mesh = a.Mesh
		}
		for _, w := range strings.Fields(a.With) {
			if nodeNum(w) != 0 {
				rs.heardOnAir(a.ID, w)
			}
		}
	}
}

// peerRadios lists the radios another bridge (occupant) sends through.
func (rs *radios) peerRadios(occupant string) []string {
	var out []string
	for id, s := range rs.byID {
		if s.peers[occupant] {
			out = append(out, id)
		}
	}
	return out
}

// clearPeers forgets what other bridges said: a new connection hears it
// again as it joins the rooms.
func (rs *radios) clearPeers() {
	for id, s := range rs.byID {
		clear(s.peers)
		if !s.local {
			delete(rs.byID, id)
		}
	}
}

// apart reports whether another bridge (occupant) sends through radios
// on none of this gateway's meshes: what it posts from its mesh is for
// this gateway's meshes too.
func (rs *radios) apart(occupant string) bool {
	meshes := rs.meshes()
	peer, local := false, false
	for _, g := range meshes {
		hasPeer, hasLocal := false, false
		for _, s := range g {
			hasPeer = hasPeer || s.peers[occupant]
			hasLocal = hasLocal || s.local
		}
		if hasPeer && hasLocal {
			return false
		}
		peer, local = peer || hasPeer, local || hasLocal
	}
	return peer && local
}

// advert is what this gateway says, in its room presence, it sends
// through: its online radios, each with its mesh's name and the radios it
// shares the mesh with. Canonical, so a change shows as a different value.
func (rs *radios) advert() *radiosAdvert {
	adv := &radiosAdvert{}
	for _, g := range rs.meshes() {
		var ids []string
		for _, s := range g {
			ids = append(ids, s.id)
		}
		for _, s := range g {
			if s.local && s.online() {
				with := slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return id == s.id })
				adv.Radios = append(adv.Radios, advertRadio{ID: s.id, Mesh: s.mesh, With: strings.Join(with, " ")})
			}
		}
	}
	return adv
}

// describe lists the radios and their states for !status.
func (rs *radios) describe() string {
	var parts []string
	for _, g := range rs.meshes() {
		for _, s := range g {
			if !s.local {
				continue // another bridge's
			}
			state := "disconnected"
			if s.online() {
				state = "connected"
			}
			if s.status.AirtimeBlocked {
				state += " (its airtime share is spent for now: messages to the mesh wait)"
			}
			parts = append(parts, "radio "+s.id+" is "+state)
		}
	}
	if len(parts) == 0 {
		return "No radio has reported to the bridge yet."
	}
	return strings.ToUpper(parts[0][:1]) + strings.Join(parts, "; ")[1:] + "."
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
