package hass

import (
	"cmp"
	"encoding/json"
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// stateFile keeps, in the state directory, what was announced: each
// node's latest state and the discovery topics published for it and for
// each radio and XMPP side. On the embedded broker retained messages do not
// outlive the daemon, so after a restart only this file says which
// configs Home Assistant still holds and must be told to remove.
const stateFile = "hass.json"

type savedFile struct {
	Nodes   []savedNode   `json:"nodes"`
	Bridges []savedBridge `json:"bridges"`
	// XMPP is left out when empty, as in files from before it existed.
	XMPP []savedXMPP `json:"xmpp,omitempty"`
}

type savedNode struct {
	Node    topics.HassNodeState `json:"node"`
	Heard   int64                `json:"heard"` // unix seconds, the bridge's clock
	Configs []string             `json:"configs"`
}

type savedBridge struct {
	Gateway string              `json:"gateway"`
	Radio   *topics.RadioRecord `json:"radio,omitempty"`
	Configs []string            `json:"configs"`
}

type savedXMPP struct {
	JID     string   `json:"jid"`
	Configs []string `json:"configs"`
}

// load takes in what an earlier run announced. Nodes that have expired
// meanwhile are removed at once (their configs emptied), before anything
// could announce them again; the others are published again by the first
// flush, since the payloads they were published with are not known.
func (s *state) load() {
	if s.cfg.StateDir == "" {
		return
	}
	path := filepath.Join(s.cfg.StateDir, stateFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	var f savedFile
	if err == nil {
		err = json.Unmarshal(b, &f)
	}
	if err != nil {
		// Entities of the last run that expire meanwhile stay in Home
		// Assistant until removed there by hand.
		s.log.Warn("what was announced to Home Assistant before cannot be read; starting afresh", "file", path, "err", err)
		return
	}
	now := s.cfg.Now()
	// The most recently heard first, so MaxNodes keeps those.
	slices.SortStableFunc(f.Nodes, func(a, b savedNode) int { return cmp.Compare(b.Heard, a.Heard) })
	expired := 0
	for _, sn := range f.Nodes {
		n := &node{st: sn.Node, configs: map[string]uint64{}, dirty: true}
		for _, t := range sn.Configs {
			n.configs[t] = 0
		}
		n.setHeard(time.Unix(sn.Heard, 0))
		switch {
		case sn.Node.ID == "" || s.nodes[sn.Node.Num] != nil:
			continue
		case now.Sub(n.heard) > s.cfg.Expire:
			s.removeNode(n, "not heard for longer than the expiry while the bridge was away", "last_heard", n.st.LastHeard)
			expired++
		case len(s.nodes) >= s.cfg.MaxNodes:
			s.removeNode(n, "more nodes kept than are announced at most", "max_nodes", s.cfg.MaxNodes)
			expired++
		default:
			s.nodes[n.st.Num] = n
		}
	}
	for _, sb := range f.Bridges {
		if sb.Gateway == "" {
			continue
		}
		b := &bridge{id: sb.Gateway, radio: sb.Radio, configs: map[string]uint64{}, dirty: true}
		for _, t := range sb.Configs {
			b.configs[t] = 0
		}
		s.bridges[b.id] = b
	}
	for _, sx := range f.XMPP {
		if topics.ValidXMPPJID(sx.JID) != nil {
			continue
		}
		x := s.xmppSide(sx.JID)
		for _, t := range sx.Configs {
			x.configs[t] = 0
		}
	}
	if expired > 0 {
		s.save()
	}
}

// save writes what is announced, whole or not at all.
func (s *state) save() {
	s.saveDue = false
	s.lastSave = s.cfg.Now()
	if s.cfg.StateDir == "" {
		return
	}
	f := savedFile{Nodes: []savedNode{}, Bridges: []savedBridge{}}
	for _, n := range s.sortedNodes() {
		f.Nodes = append(f.Nodes, savedNode{Node: n.st, Heard: n.heard.Unix(), Configs: slices.Sorted(maps.Keys(n.configs))})
	}
	for _, id := range slices.Sorted(maps.Keys(s.bridges)) {
		b := s.bridges[id]
		f.Bridges = append(f.Bridges, savedBridge{Gateway: id, Radio: b.radio, Configs: slices.Sorted(maps.Keys(b.configs))})
	}
	for _, jid := range slices.Sorted(maps.Keys(s.xmpps)) {
		f.XMPP = append(f.XMPP, savedXMPP{JID: jid, Configs: slices.Sorted(maps.Keys(s.xmpps[jid].configs))})
	}
	b, err := json.Marshal(f)
	if err == nil {
		err = writeFile(filepath.Join(s.cfg.StateDir, stateFile), b)
	}
	if err != nil {
		// Home Assistant still gets everything; only a removal after a
		// restart may be missed.
		s.saveDue = true
		s.log.Warn("saving what is announced to Home Assistant", "err", err)
	}
}

// writeFile replaces path with data through a synced temporary file, so a
// power cut leaves the old file or the new one.
func writeFile(path string, data []byte) error {
	tmp := path + ".new"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
