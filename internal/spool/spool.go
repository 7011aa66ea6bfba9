// Package spool is the bridge's durable store-and-forward queue and dedupe
// table, kept in one bbolt file under the state directory (e.g.
// <state-dir>/spool.db).
//
// # Delivery contract
//
// A gateway that accepts a message for the other side calls Push before it
// acknowledges the message to its source (MQTT PUBACK, mesh ACK, ...). Push
// returns only after the item is committed (fsync'd unless Options.NoSync),
// so a SIGKILL or power cut afterwards cannot lose it. The delivering side
// calls Peek, delivers, and calls Ack once the other side has the message.
// Ack is idempotent. A crash between delivery and Ack means that item is
// delivered again after restart (at-least-once); Ack right after delivery
// keeps that window to one item per queue.
//
// Push takes a dedupe key (e.g. "mesh:<from>:<id>", "xmpp:<stanza-id>").
// Storing the item and marking the key happen in one transaction: a key that
// was seen before makes Push report dup=true and store nothing, across
// restarts, so a message retransmitted by its source is spooled only once.
//
// # Limits and drop policy
//
// Each queue is bounded by Options.MaxItems and Options.MaxBytes (sum of the
// data lengths). When a Push would exceed either, the OLDEST items of that
// queue are dropped in the same transaction to make room, and the new item is
// stored. Rationale: the bridge's sources cannot be pushed back on (a LoRa
// packet or a MUC message that the bridge refuses is simply lost), so when
// the queue is full the choice is which message to lose, and on a mesh the
// newest one (current position, "I'm OK now") is nearly always the more
// relevant. A full queue therefore keeps a sliding window of the most recent
// traffic. A single item larger than MaxBytes is refused with ErrTooLarge.
//
// Items older than Options.MaxAge are dropped when their queue is pushed to,
// and in every queue at Open. Peek returns whatever is stored.
//
// The dedupe keys of dropped items stay marked, so a late retransmission of
// a dropped message is not spooled again out of order.
//
// Every drop is reported, after its transaction has committed, as a Dropped
// value passed to Options.OnDrop (default: a warning on Options.Logger).
//
// Ages are measured with the wall clock, which on a Raspberry Pi without an
// RTC may be unset at boot and jump later. A timestamp before 2024 (clock not
// set), or in the future (clock went backwards), has an unknown age: such an
// item is never dropped for age and such a dedupe key never expires by TTL;
// the count and byte limits still bound them.
//
// # Dedupe table
//
// Keys expire after Options.DedupeTTL and, beyond Options.DedupeMax keys, the
// oldest are evicted. Pruning is incremental: each write removes the overflow
// and a few expired keys from the head of an insertion-ordered index, never a
// full scan. Seen ignores an expired key even before it is pruned.
//
// # Errors
//
// A failed write is returned to the caller and leaves the store exactly as
// before the call; the next write after space returns succeeds. A full disk
// usually shows as errors.Is(err, syscall.ENOSPC) (a failing page write);
// bbolt does not wrap the error when growing the file itself fails. Reads
// (Peek, Stats, Seen) need no space, and Ack often succeeds on a full disk
// because it can reuse pages freed earlier. A write that would change
// nothing (a dup Push, an Ack of unknown seqs) writes nothing and cannot fail
// for lack of space.
//
// A Store is safe for concurrent use. Writes are serialised by bbolt.
package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Defaults for the zero Options fields.
const (
	DefaultMaxItems  = 10000
	DefaultMaxBytes  = 16 << 20
	DefaultMaxAge    = 7 * 24 * time.Hour
	DefaultDedupeMax = 100000
	DefaultDedupeTTL = 30 * 24 * time.Hour
)

// Reasons given in Dropped.Reason.
const (
	ReasonMaxAge   = "max-age"
	ReasonMaxItems = "max-items"
	ReasonMaxBytes = "max-bytes"
)

var (
	// ErrLocked is returned by Open when another process holds the file.
	ErrLocked = errors.New("spool: database is locked by another process")
	// ErrTooLarge is returned by Push for data longer than Options.MaxBytes.
	ErrTooLarge = errors.New("spool: item larger than the queue byte limit")
)

// Options configures a Store. Zero fields take the defaults.
type Options struct {
	MaxItems  int           // per queue; default 10000
	MaxBytes  int64         // per queue, sum of data lengths; default 16 MiB
	MaxAge    time.Duration // default 7 days
	DedupeMax int           // default 100000 keys
	DedupeTTL time.Duration // default 30 days

	// OnDrop is called for every drop caused by the limits, after the drop
	// has been committed, on the goroutine that called Open or Push. It must
	// not block for long. Default: a warning on Logger.
	OnDrop func(Dropped)

	// Logger receives the default drop warnings; nil discards them.
	Logger *slog.Logger

	// NoSync skips fsync: a power cut may lose or corrupt recent writes.
	// Tests and benchmarks only.
	NoSync bool

	now         func() time.Time // injected clock (tests)
	lockTimeout time.Duration    // wait for the file lock; default 1s
}

// Dropped reports undelivered items removed from a queue by a limit.
type Dropped struct {
	Queue  string
	Items  int
	Bytes  int64
	Reason string // ReasonMaxAge, ReasonMaxItems or ReasonMaxBytes
}

// Item is one spooled message.
type Item struct {
	Seq   uint64 // increasing within its queue, never reused
	Queue string
	At    time.Time // when it was pushed
	Data  []byte
}

// Store is an open spool file.
type Store struct {
	db  *bolt.DB
	opt Options

	// failWrite, when set, is called at the end of every write transaction
	// that changed something; an error aborts it (injected write errors).
	failWrite func() error
}

var (
	bktQueues = []byte("queues")
	bktDedupe = []byte("dedupe")
	bktItems  = []byte("i") // in a queue bucket: seq -> at + data
	bktKeys   = []byte("k") // in dedupe: key -> dseq + at
	bktOrder  = []byte("o") // in dedupe: dseq -> at + key
	keyCount  = []byte("n")
	keyBytes  = []byte("b")

	// Timestamps before this mean the clock was not set.
	clockFloor = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
)

// expiredBatch bounds the expired dedupe keys pruned per write.
const expiredBatch = 8

// errNoop aborts a write transaction that changed nothing, so that it
// writes nothing (and cannot fail for lack of space).
var errNoop = errors.New("no change")

// Open opens or creates the spool file at path (mode 0600), drops whatever
// exceeds the limits (reported through OnDrop), and prunes the dedupe table.
// It returns an error wrapping ErrLocked if another process has it open.
func Open(path string, opt Options) (*Store, error) {
	if opt.MaxItems <= 0 {
		opt.MaxItems = DefaultMaxItems
	}
	if opt.MaxBytes <= 0 {
		opt.MaxBytes = DefaultMaxBytes
	}
	if opt.MaxAge <= 0 {
		opt.MaxAge = DefaultMaxAge
	}
	if opt.DedupeMax <= 0 {
		opt.DedupeMax = DefaultDedupeMax
	}
	if opt.DedupeTTL <= 0 {
		opt.DedupeTTL = DefaultDedupeTTL
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.OnDrop == nil {
		log := opt.Logger
		opt.OnDrop = func(d Dropped) {
			log.Warn("spool: dropped undelivered messages", "queue", d.Queue,
				"items", d.Items, "bytes", d.Bytes, "reason", d.Reason)
		}
	}
	if opt.now == nil {
		opt.now = time.Now
	}
	if opt.lockTimeout <= 0 {
		opt.lockTimeout = time.Second
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opt.lockTimeout, NoSync: opt.NoSync})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("spool: open %s: %w (is another bridge running?)", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("spool: open %s: %w", path, err)
	}
	s := &Store{db: db, opt: opt}
	var drops []Dropped
	err = s.update(func(tx *bolt.Tx) (bool, error) {
		drops = drops[:0]
		dirty := false
		if tx.Bucket(bktQueues) == nil || tx.Bucket(bktDedupe) == nil {
			dirty = true
			if _, err := tx.CreateBucketIfNotExists(bktQueues); err != nil {
				return false, err
			}
			d, err := tx.CreateBucketIfNotExists(bktDedupe)
			if err != nil {
				return false, err
			}
			if _, err := d.CreateBucketIfNotExists(bktKeys); err != nil {
				return false, err
			}
			if _, err := d.CreateBucketIfNotExists(bktOrder); err != nil {
				return false, err
			}
		}
		var names [][]byte
		err := tx.Bucket(bktQueues).ForEachBucket(func(k []byte) error {
			names = append(names, append([]byte(nil), k...))
			return nil
		})
		if err != nil {
			return false, err
		}
		now := s.opt.now()
		for _, name := range names {
			q, err := s.queue(tx, string(name), false)
			if err != nil {
				return false, err
			}
			d, err := q.enforce(now, 0, 0)
			if err != nil {
				return false, err
			}
			drops = append(drops, d...)
		}
		pruned, err := s.dedupe(tx).prune(now, -1)
		if err != nil {
			return false, err
		}
		return dirty || len(drops) > 0 || pruned, nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("spool: open %s: %w", path, err)
	}
	s.report(drops)
	return s, nil
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Push appends data to queue, unless dedupeKey ("" for none) was seen before,
// in which case it stores nothing and returns dup=true. Items dropped to make
// room are reported through Options.OnDrop. On error nothing has changed.
func (s *Store) Push(queue string, data []byte, dedupeKey string) (seq uint64, dup bool, err error) {
	if queue == "" {
		return 0, false, errors.New("spool: empty queue name")
	}
	if int64(len(data)) > s.opt.MaxBytes {
		return 0, false, fmt.Errorf("spool: push %s: %d bytes: %w", queue, len(data), ErrTooLarge)
	}
	var drops []Dropped
	err = s.update(func(tx *bolt.Tx) (bool, error) {
		drops, seq, dup = drops[:0], 0, false
		now := s.opt.now()
		if dedupeKey != "" {
			d := s.dedupe(tx)
			if d.seen(dedupeKey, now) {
				dup = true
				return false, nil
			}
			if err := d.mark(dedupeKey, now); err != nil {
				return false, err
			}
		}
		q, err := s.queue(tx, queue, true)
		if err != nil {
			return false, err
		}
		if drops, err = q.enforce(now, 1, int64(len(data))); err != nil {
			return false, err
		}
		if seq, err = q.items.NextSequence(); err != nil {
			return false, err
		}
		v := make([]byte, 8+len(data))
		binary.BigEndian.PutUint64(v, uint64(now.UnixNano()))
		copy(v[8:], data)
		if err := q.items.Put(u64(seq), v); err != nil {
			return false, err
		}
		q.n++
		q.bytes += int64(len(data))
		return true, q.save()
	})
	if err != nil {
		return 0, false, fmt.Errorf("spool: push %s: %w", queue, err)
	}
	s.report(drops)
	return seq, dup, nil
}

// Peek returns up to n items of queue (all if n <= 0), oldest first.
func (s *Store) Peek(queue string, n int) ([]Item, error) {
	var items []Item
	err := s.db.View(func(tx *bolt.Tx) error {
		q, err := s.queue(tx, queue, false)
		if q == nil || err != nil {
			return err
		}
		c := q.items.Cursor()
		for k, v := c.First(); k != nil && (n <= 0 || len(items) < n); k, v = c.Next() {
			items = append(items, Item{
				Seq:   binary.BigEndian.Uint64(k),
				Queue: queue,
				At:    stamp(v),
				Data:  append([]byte(nil), v[8:]...),
			})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("spool: peek %s: %w", queue, err)
	}
	return items, nil
}

// Ack removes delivered items from queue. Unknown seqs are ignored, so Ack is
// idempotent; several seqs are removed in one transaction.
func (s *Store) Ack(queue string, seqs ...uint64) error {
	err := s.update(func(tx *bolt.Tx) (bool, error) {
		q, err := s.queue(tx, queue, false)
		if q == nil || err != nil {
			return false, err
		}
		dirty := false
		for _, seq := range seqs {
			v := q.items.Get(u64(seq))
			if v == nil {
				continue
			}
			size := int64(len(v) - 8)
			if err := q.items.Delete(u64(seq)); err != nil {
				return false, err
			}
			q.n--
			q.bytes -= size
			dirty = true
		}
		if !dirty {
			return false, nil
		}
		return true, q.save()
	})
	if err != nil {
		return fmt.Errorf("spool: ack %s: %w", queue, err)
	}
	return nil
}

// Seen reports whether key is in the dedupe table and not expired.
func (s *Store) Seen(key string) (bool, error) {
	var seen bool
	err := s.db.View(func(tx *bolt.Tx) error {
		seen = s.dedupe(tx).seen(key, s.opt.now())
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("spool: seen: %w", err)
	}
	return seen, nil
}

// Mark records key in the dedupe table. Marking a key already seen changes
// nothing (its expiry is not extended).
func (s *Store) Mark(key string) error {
	err := s.update(func(tx *bolt.Tx) (bool, error) {
		d, now := s.dedupe(tx), s.opt.now()
		if d.seen(key, now) {
			return false, nil
		}
		return true, d.mark(key, now)
	})
	if err != nil {
		return fmt.Errorf("spool: mark: %w", err)
	}
	return nil
}

// Stats returns the number and total data size of the items in queue, and
// the push time of the oldest (zero if the queue is empty).
func (s *Store) Stats(queue string) (items int, bytes int64, oldest time.Time, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		q, err := s.queue(tx, queue, false)
		if q == nil || err != nil {
			return err
		}
		items, bytes = int(q.n), q.bytes
		if _, v := q.items.Cursor().First(); v != nil {
			oldest = stamp(v)
		}
		return nil
	})
	if err != nil {
		err = fmt.Errorf("spool: stats %s: %w", queue, err)
	}
	return items, bytes, oldest, err
}

// update runs fn in a write transaction, committed only if fn reports a
// change. A transaction that changed nothing is rolled back and writes
// nothing.
func (s *Store) update(fn func(tx *bolt.Tx) (dirty bool, err error)) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		dirty, err := fn(tx)
		if err != nil {
			return err
		}
		if !dirty {
			return errNoop
		}
		if s.failWrite != nil {
			return s.failWrite()
		}
		return nil
	})
	if err == errNoop {
		return nil
	}
	return err
}

func (s *Store) report(drops []Dropped) {
	for _, d := range drops {
		s.opt.OnDrop(d)
	}
}

// age is how old t is at now, or 0 when unknown (see the package comment).
func age(t, now time.Time) time.Duration {
	if t.Before(clockFloor) || now.Before(clockFloor) || t.After(now) {
		return 0
	}
	return now.Sub(t)
}

// queue is a queue's bucket with its counters loaded.
type queue struct {
	s     *Store
	name  string
	b     *bolt.Bucket
	items *bolt.Bucket
	n     int64
	bytes int64
}

// queue loads name's bucket, creating it if create is set (in a write
// transaction). It returns nil, nil for a queue that does not exist.
func (s *Store) queue(tx *bolt.Tx, name string, create bool) (*queue, error) {
	root := tx.Bucket(bktQueues)
	b := root.Bucket([]byte(name))
	if b == nil {
		if !create {
			return nil, nil
		}
		var err error
		if b, err = root.CreateBucket([]byte(name)); err != nil {
			return nil, err
		}
		if _, err = b.CreateBucket(bktItems); err != nil {
			return nil, err
		}
	}
	q := &queue{s: s, name: name, b: b, items: b.Bucket(bktItems)}
	if q.items == nil {
		return nil, fmt.Errorf("queue %q: missing items bucket", name)
	}
	if v := b.Get(keyCount); v != nil {
		q.n = int64(binary.BigEndian.Uint64(v))
	}
	if v := b.Get(keyBytes); v != nil {
		q.bytes = int64(binary.BigEndian.Uint64(v))
	}
	return q, nil
}

func (q *queue) save() error {
	if err := q.b.Put(keyCount, u64(uint64(q.n))); err != nil {
		return err
	}
	return q.b.Put(keyBytes, u64(uint64(q.bytes)))
}

// enforce drops the items older than MaxAge, then the oldest items until
// items more items of size bytes in all fit the limits. It saves the counters
// if it dropped anything.
func (q *queue) enforce(now time.Time, items, size int64) ([]Dropped, error) {
	opt := q.s.opt
	reasons := []struct {
		reason string
		over   func(at time.Time) bool
	}{
		{ReasonMaxAge, func(at time.Time) bool { return age(at, now) > opt.MaxAge }},
		{ReasonMaxItems, func(time.Time) bool { return q.n+items > int64(opt.MaxItems) }},
		{ReasonMaxBytes, func(time.Time) bool { return q.bytes+size > opt.MaxBytes }},
	}
	var drops []Dropped
	for _, r := range reasons {
		d := Dropped{Queue: q.name, Reason: r.reason}
		c := q.items.Cursor()
		for k, v := c.First(); k != nil && r.over(stamp(v)); k, v = c.First() {
			if err := c.Delete(); err != nil {
				return nil, err
			}
			d.Items++
			d.Bytes += int64(len(v) - 8)
			q.n--
			q.bytes -= int64(len(v) - 8)
		}
		if d.Items > 0 {
			drops = append(drops, d)
		}
	}
	if len(drops) > 0 {
		return drops, q.save()
	}
	return nil, nil
}

// dedupeTable is the dedupe buckets: keys maps a key to its entry in order,
// which lists the keys in the order they were marked.
type dedupeTable struct {
	opt   *Options
	root  *bolt.Bucket
	keys  *bolt.Bucket
	order *bolt.Bucket
}

func (s *Store) dedupe(tx *bolt.Tx) dedupeTable {
	root := tx.Bucket(bktDedupe)
	return dedupeTable{&s.opt, root, root.Bucket(bktKeys), root.Bucket(bktOrder)}
}

func (d dedupeTable) seen(key string, now time.Time) bool {
	v := d.keys.Get([]byte(key))
	return v != nil && age(stamp(v[8:]), now) <= d.opt.DedupeTTL
}

func (d dedupeTable) count() int64 {
	if v := d.root.Get(keyCount); v != nil {
		return int64(binary.BigEndian.Uint64(v))
	}
	return 0
}

// mark records key at now (replacing an expired entry), then prunes.
func (d dedupeTable) mark(key string, now time.Time) error {
	n := d.count()
	if old := d.keys.Get([]byte(key)); old != nil {
		if err := d.order.Delete(append([]byte(nil), old[:8]...)); err != nil {
			return err
		}
		n--
	}
	dseq, err := d.order.NextSequence()
	if err != nil {
		return err
	}
	at := u64(uint64(now.UnixNano()))
	if err := d.order.Put(u64(dseq), append(at, key...)); err != nil {
		return err
	}
	if err := d.keys.Put([]byte(key), append(u64(dseq), at...)); err != nil {
		return err
	}
	if err := d.root.Put(keyCount, u64(uint64(n+1))); err != nil {
		return err
	}
	_, err = d.prune(now, expiredBatch)
	return err
}

// prune evicts the oldest keys beyond DedupeMax, then up to batch expired
// keys from the head of the order (all of them if batch < 0).
func (d dedupeTable) prune(now time.Time, batch int) (bool, error) {
	n, pruned := d.count(), false
	c := d.order.Cursor()
	for k, v := c.First(); k != nil; k, v = c.First() {
		over := n > int64(d.opt.DedupeMax)
		if !over && (batch == 0 || age(stamp(v), now) <= d.opt.DedupeTTL) {
			break
		}
		key := append([]byte(nil), v[8:]...)
		if err := c.Delete(); err != nil {
			return false, err
		}
		if err := d.keys.Delete(key); err != nil {
			return false, err
		}
		n--
		pruned = true
		if !over && batch > 0 {
			batch--
		}
	}
	if !pruned {
		return false, nil
	}
	return true, d.root.Put(keyCount, u64(uint64(n)))
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

// stamp decodes the timestamp at the start of a stored value.
func stamp(v []byte) time.Time {
	return time.Unix(0, int64(binary.BigEndian.Uint64(v)))
}
