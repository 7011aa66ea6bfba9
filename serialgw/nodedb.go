package serialgw

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// nodeDB holds node records and writes them to a file in the state
// directory, in the form they are published in.
type nodeDB struct {
	mu    sync.Mutex
	path  string
	nodes map[uint32]topics.NodeRecord
	dirty bool
	// viaMQTT holds the nodes whose last packet reached the radio through
	// MQTT: they are not counted as online local nodes. Not saved: the
	// radio's node database tells it again at every handshake.
	viaMQTT map[uint32]bool
}

const nodesFile = "nodes.json"

func openNodeDB(stateDir string) (*nodeDB, error) {
	db := &nodeDB{nodes: map[uint32]topics.NodeRecord{}, viaMQTT: map[uint32]bool{}}
	if stateDir == "" {
		return db, nil
	}
	db.path = filepath.Join(stateDir, nodesFile)
	b, err := os.ReadFile(db.path)
	if os.IsNotExist(err) {
		return db, nil
	}
	if err != nil {
		return nil, fmt.Errorf("node database: %w", err)
	}
	var list []topics.NodeRecord
	if err := json.Unmarshal(b, &list); err != nil {
		// A damaged cache is not worth refusing to start for: the radio
		// sends its whole node database at every handshake.
		return db, fmt.Errorf("node database %s is damaged, starting empty: %w", db.path, err)
	}
	for _, n := range list {
		db.nodes[n.Num] = n
	}
	return db, nil
}

// updateUser records a node's User and reports whether anything changed.
func (db *nodeDB) updateUser(num uint32, u *meshpb.User, lastHeard uint32) (topics.NodeRecord, bool) {
	db.mu.Lock()
	defer db.mu.Unlock()
	old := db.nodes[num]
	rec := old
	rec.Num, rec.ID = num, mesh.NodeID(num)
	if u != nil {
		rec.LongName, rec.ShortName = u.GetLongName(), u.GetShortName()
		rec.HWModel, rec.Role = u.GetHwModel().String(), u.GetRole().String()
	}
	if lastHeard > rec.LastHeard {
		rec.LastHeard = lastHeard
	}
	if rec == old {
		return db.published(rec), false
	}
	db.nodes[num] = rec
	db.dirty = true
	// last_heard alone changes often; it is saved but not worth a publish.
	rec2, old2 := rec, old
	rec2.LastHeard, old2.LastHeard = 0, 0
	return db.published(rec), rec2 != old2
}

// published is a record as it is published: with whether the node was
// last heard through MQTT, which is not kept on disk. db.mu is held.
func (db *nodeDB) published(rec topics.NodeRecord) topics.NodeRecord {
	rec.ViaMQTT = db.viaMQTT[rec.Num]
	return rec
}

// heardVia records whether the last packet from num reached the radio
// through MQTT.
func (db *nodeDB) heardVia(num uint32, viaMQTT bool) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if viaMQTT {
		db.viaMQTT[num] = true
	} else {
		delete(db.viaMQTT, num)
	}
}

// onlineLocal counts the nodes other than self heard within window before
// now, not through MQTT: the firmware's number of online local nodes
// (NodeDB::getNumOnlineMeshNodes(true)). A last-heard time ahead of now
// (the radio's clock is ahead) counts as just heard, as in the firmware.
func (db *nodeDB) onlineLocal(now time.Time, window time.Duration, self uint32) int {
	db.mu.Lock()
	defer db.mu.Unlock()
	n := 0
	for num, rec := range db.nodes {
		if num == self || rec.LastHeard == 0 || db.viaMQTT[num] {
			continue
		}
		if now.Sub(time.Unix(int64(rec.LastHeard), 0)) < window {
			n++
		}
	}
	return n
}

func (db *nodeDB) all() []topics.NodeRecord {
	db.mu.Lock()
	defer db.mu.Unlock()
	out := make([]topics.NodeRecord, 0, len(db.nodes))
	for _, n := range db.nodes {
		out = append(out, n)
	}
	return out
}

func (db *nodeDB) get(num uint32) (topics.NodeRecord, bool) {
	db.mu.Lock()
	defer db.mu.Unlock()
	n, ok := db.nodes[num]
	return n, ok
}

// save writes the records if they changed, atomically (temp file + rename).
func (db *nodeDB) save() error {
	db.mu.Lock()
	if db.path == "" || !db.dirty {
		db.mu.Unlock()
		return nil
	}
	list := make([]topics.NodeRecord, 0, len(db.nodes))
	for _, n := range db.nodes {
		list = append(list, n)
	}
	db.dirty = false
	db.mu.Unlock()
	b, err := json.MarshalIndent(list, "", " ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(db.path), ".nodes-*.json")
	if err != nil {
		db.markDirty()
		return fmt.Errorf("node database: %w", err)
	}
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), db.path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		db.markDirty()
		return fmt.Errorf("node database: %w", err)
	}
	return nil
}

func (db *nodeDB) markDirty() {
	db.mu.Lock()
	db.dirty = true
	db.mu.Unlock()
}
