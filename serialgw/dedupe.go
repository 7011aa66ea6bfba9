package serialgw

import (
	"container/list"
	"time"
)

// dedupe remembers recently seen (from, id) pairs: the same packet arrives
// once per relay that repeats it, and again when a radio replays its cache
// after a handshake.
type dedupe struct {
	max   int
	ttl   time.Duration
	order *list.List // of seenKey, oldest first
	at    map[uint64]*list.Element
}

type seenEntry struct {
	key  uint64
	when time.Time
}

func newDedupe(max int, ttl time.Duration) *dedupe {
	return &dedupe{max: max, ttl: ttl, order: list.New(), at: map[uint64]*list.Element{}}
}

// seen records the pair and reports whether it was already known.
func (d *dedupe) seen(from, id uint32, now time.Time) bool {
	key := uint64(from)<<32 | uint64(id)
	for e := d.order.Front(); e != nil && (d.order.Len() > d.max || now.Sub(e.Value.(seenEntry).when) > d.ttl); e = d.order.Front() {
		delete(d.at, e.Value.(seenEntry).key)
		d.order.Remove(e)
	}
	if _, ok := d.at[key]; ok {
		return true
	}
	d.at[key] = d.order.PushBack(seenEntry{key, now})
	return false
}
