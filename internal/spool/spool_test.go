package spool

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// t0 is a plausible wall-clock time for the injected clock.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

// openStore opens path with opt, failing the test on error, and closes it at
// the end of the test (closing twice is harmless).
func openStore(t testing.TB, path string, opt Options) *Store {
	t.Helper()
	s, err := Open(path, opt)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// check runs bbolt's consistency check and verifies the counters of every
// queue and of the dedupe table against their buckets.
func check(t testing.TB, s *Store) {
	t.Helper()
	err := s.db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		err := tx.Bucket(bktQueues).ForEachBucket(func(name []byte) error {
			q, err := s.queue(tx, string(name), false)
			if err != nil {
				return err
			}
			var n, bytes int64
			q.items.ForEach(func(_, v []byte) error {
				n++
				bytes += int64(len(v) - 8)
				return nil
			})
			if n != q.n || bytes != q.bytes {
				return fmt.Errorf("queue %s: counters %d items %d bytes, stored %d items %d bytes", name, q.n, q.bytes, n, bytes)
			}
			return nil
		})
		if err != nil {
			return err
		}
		d := s.dedupe(tx)
		if k, o := d.keys.Stats().KeyN, d.order.Stats().KeyN; int64(k) != d.count() || k != o {
			return fmt.Errorf("dedupe: count %d, %d keys, %d in order", d.count(), k, o)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("check: %v", err)
	}
}

func push(t testing.TB, s *Store, queue, data, key string) uint64 {
	t.Helper()
	seq, dup, err := s.Push(queue, []byte(data), key)
	if err != nil || dup {
		t.Fatalf("Push(%q, %q, %q) = dup %v, err %v", queue, data, key, dup, err)
	}
	return seq
}

// contents returns the data of every item in queue, oldest first.
func contents(t testing.TB, s *Store, queue string) []string {
	t.Helper()
	items, err := s.Peek(queue, 0)
	if err != nil {
		t.Fatalf("Peek: %v", err)
	}
	out := []string{}
	for _, it := range items {
		out = append(out, string(it.Data))
	}
	return out
}

func TestFIFOAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool.db")
	s := openStore(t, path, Options{NoSync: true})
	var seqs []uint64
	for i := range 5 {
		seqs = append(seqs, push(t, s, "mesh->room", fmt.Sprint("m", i), ""))
		push(t, s, "room->mesh", fmt.Sprint("r", i), "")
	}
	s.Close()

	s = openStore(t, path, Options{NoSync: true})
	check(t, s)
	if got, want := contents(t, s, "mesh->room"), []string{"m0", "m1", "m2", "m3", "m4"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("mesh->room after reopen: %q, want %q", got, want)
	}
	if got, want := contents(t, s, "room->mesh"), []string{"r0", "r1", "r2", "r3", "r4"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("room->mesh after reopen: %q, want %q", got, want)
	}
	first, err := s.Peek("mesh->room", 2)
	if err != nil || len(first) != 2 || first[0].Seq != seqs[0] || first[1].Seq != seqs[1] || first[0].Queue != "mesh->room" {
		t.Fatalf("Peek(2) = %+v, %v", first, err)
	}

	// Partial ack, out of order, repeated, unknown seq and unknown queue.
	for range 2 {
		if err := s.Ack("mesh->room", seqs[0], seqs[2], 999); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Ack("no-such-queue", 1); err != nil {
		t.Fatal(err)
	}
	if got, want := contents(t, s, "mesh->room"), []string{"m1", "m3", "m4"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("after partial ack: %q, want %q", got, want)
	}
	if n, bytes, oldest, err := s.Stats("mesh->room"); err != nil || n != 3 || bytes != 6 || oldest.IsZero() {
		t.Fatalf("Stats = %d, %d, %v, %v", n, bytes, oldest, err)
	}
	s.Close()

	s = openStore(t, path, Options{NoSync: true})
	check(t, s)
	if got, want := contents(t, s, "mesh->room"), []string{"m1", "m3", "m4"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("partial ack after reopen: %q, want %q", got, want)
	}
	// Sequence numbers are never reused, even once the queue is empty.
	if err := s.Ack("mesh->room", seqs...); err != nil {
		t.Fatal(err)
	}
	if seq := push(t, s, "mesh->room", "m5", ""); seq <= seqs[4] {
		t.Fatalf("seq %d after %d", seq, seqs[4])
	}
	if n, bytes, oldest, err := s.Stats("empty"); err != nil || n != 0 || bytes != 0 || !oldest.IsZero() {
		t.Fatalf("Stats(empty) = %d, %d, %v, %v", n, bytes, oldest, err)
	}
	if items, err := s.Peek("empty", 10); err != nil || len(items) != 0 {
		t.Fatalf("Peek(empty) = %v, %v", items, err)
	}
	if _, _, err := s.Push("", nil, ""); err == nil {
		t.Fatal("Push to an empty queue name succeeded")
	}
	check(t, s)
}

func TestDedupeAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool.db")
	s := openStore(t, path, Options{NoSync: true})
	push(t, s, "q", "a", "mesh:!1234abcd:42")
	s.Close()

	s = openStore(t, path, Options{NoSync: true})
	for _, queue := range []string{"q", "other"} {
		seq, dup, err := s.Push(queue, []byte("a again"), "mesh:!1234abcd:42")
		if err != nil || !dup || seq != 0 {
			t.Fatalf("Push(%s) of a seen key = %d, dup %v, %v", queue, seq, dup, err)
		}
	}
	if got := contents(t, s, "q"); !reflect.DeepEqual(got, []string{"a"}) {
		t.Fatalf("q = %q", got)
	}
	if n, _, _, _ := s.Stats("other"); n != 0 {
		t.Fatalf("dup stored in other: %d items", n)
	}
	// Without a key nothing is a dup.
	push(t, s, "q", "b", "")
	push(t, s, "q", "b", "")
	// Mark and Seen, and Mark of a seen key.
	for _, step := range []struct {
		mark, key string
		want      bool
	}{
		{"", "xmpp:abc", false},
		{"xmpp:abc", "xmpp:abc", true},
		{"xmpp:abc", "xmpp:abc", true},
		{"", "mesh:!1234abcd:42", true},
		{"", "mesh:!1234abcd:43", false},
	} {
		if step.mark != "" {
			if err := s.Mark(step.mark); err != nil {
				t.Fatal(err)
			}
		}
		if seen, err := s.Seen(step.key); err != nil || seen != step.want {
			t.Fatalf("Seen(%s) = %v, %v; want %v", step.key, seen, err, step.want)
		}
	}
	s.Close()
	s = openStore(t, path, Options{NoSync: true})
	check(t, s)
	if seen, err := s.Seen("xmpp:abc"); err != nil || !seen {
		t.Fatalf("marked key not seen after reopen: %v, %v", seen, err)
	}
	if _, dup, err := s.Push("q", []byte("c"), "xmpp:abc"); err != nil || !dup {
		t.Fatalf("Push with a marked key: dup %v, %v", dup, err)
	}
}

func TestLimits(t *testing.T) {
	type env struct {
		t     *testing.T
		s     *Store
		path  string
		opt   Options
		clock *clock
	}
	// reopen closes e.s and opens it again with opt (limits may change).
	reopen := func(e *env, opt Options) {
		e.s.Close()
		opt.now, opt.OnDrop, opt.NoSync = e.opt.now, e.opt.OnDrop, true
		e.s = openStore(e.t, e.path, opt)
	}
	tests := []struct {
		name      string
		opt       Options
		run       func(e *env)
		want      []string
		wantDrops []Dropped
	}{
		{
			name: "count drops the oldest",
			opt:  Options{MaxItems: 3},
			run: func(e *env) {
				for i := range 5 {
					push(e.t, e.s, "q", fmt.Sprint(i), "")
				}
			},
			want: []string{"2", "3", "4"},
			wantDrops: []Dropped{
				{Queue: "q", Items: 1, Bytes: 1, Reason: ReasonMaxItems},
				{Queue: "q", Items: 1, Bytes: 1, Reason: ReasonMaxItems},
			},
		},
		{
			name: "count of empty items",
			opt:  Options{MaxItems: 1},
			run: func(e *env) {
				push(e.t, e.s, "q", "", "")
				push(e.t, e.s, "q", "", "")
			},
			want:      []string{""},
			wantDrops: []Dropped{{Queue: "q", Items: 1, Bytes: 0, Reason: ReasonMaxItems}},
		},
		{
			name: "bytes drop as many oldest as needed",
			opt:  Options{MaxBytes: 10},
			run: func(e *env) {
				for _, d := range []string{"aaaa", "bbbb", "cccc", "0123456789"} {
					push(e.t, e.s, "q", d, "")
				}
			},
			want: []string{"0123456789"},
			wantDrops: []Dropped{
				{Queue: "q", Items: 1, Bytes: 4, Reason: ReasonMaxBytes},
				{Queue: "q", Items: 2, Bytes: 8, Reason: ReasonMaxBytes},
			},
		},
		{
			name: "an item over the byte limit is refused, nothing dropped",
			opt:  Options{MaxBytes: 10},
			run: func(e *env) {
				push(e.t, e.s, "q", "kept", "")
				_, _, err := e.s.Push("q", []byte("01234567890"), "k")
				if !errors.Is(err, ErrTooLarge) {
					e.t.Fatalf("Push of 11 bytes: %v, want ErrTooLarge", err)
				}
				if seen, _ := e.s.Seen("k"); seen {
					e.t.Fatal("refused item's key was marked")
				}
			},
			want: []string{"kept"},
		},
		{
			name: "limits apply per queue",
			opt:  Options{MaxItems: 1},
			run: func(e *env) {
				push(e.t, e.s, "other", "x", "")
				push(e.t, e.s, "q", "y", "")
			},
			want: []string{"y"},
		},
		{
			name: "age on push",
			opt:  Options{MaxAge: time.Hour},
			run: func(e *env) {
				push(e.t, e.s, "q", "old", "")
				e.clock.advance(30 * time.Minute)
				push(e.t, e.s, "q", "newer", "")
				e.clock.advance(31 * time.Minute)
				push(e.t, e.s, "q", "new", "")
			},
			want:      []string{"newer", "new"},
			wantDrops: []Dropped{{Queue: "q", Items: 1, Bytes: 3, Reason: ReasonMaxAge}},
		},
		{
			name: "age on open",
			opt:  Options{MaxAge: time.Hour},
			run: func(e *env) {
				push(e.t, e.s, "q", "old", "")
				push(e.t, e.s, "q", "old2", "")
				e.clock.advance(61 * time.Minute)
				reopen(e, e.opt)
			},
			want:      []string{},
			wantDrops: []Dropped{{Queue: "q", Items: 2, Bytes: 7, Reason: ReasonMaxAge}},
		},
		{
			name: "limits lowered at open",
			opt:  Options{},
			run: func(e *env) {
				for i := range 4 {
					push(e.t, e.s, "q", fmt.Sprint(i), "")
				}
				reopen(e, Options{MaxItems: 3, MaxBytes: 1})
			},
			want: []string{"3"},
			wantDrops: []Dropped{
				{Queue: "q", Items: 1, Bytes: 1, Reason: ReasonMaxItems},
				{Queue: "q", Items: 2, Bytes: 2, Reason: ReasonMaxBytes},
			},
		},
		{
			name: "unset clock: age unknown, never dropped for age",
			opt:  Options{MaxAge: time.Hour},
			run: func(e *env) {
				e.clock.t = time.Unix(3600, 0) // Pi booted without RTC or NTP
				push(e.t, e.s, "q", "1970", "")
				e.clock.t = t0 // NTP synced
				push(e.t, e.s, "q", "now", "")
				e.clock.advance(-2 * time.Hour) // clock stepped back
				push(e.t, e.s, "q", "earlier", "")
				reopen(e, e.opt)
			},
			want: []string{"1970", "now", "earlier"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var drops []Dropped
			clk := &clock{t0}
			opt := tt.opt
			opt.NoSync, opt.now = true, clk.now
			opt.OnDrop = func(d Dropped) { drops = append(drops, d) }
			e := &env{t: t, path: filepath.Join(t.TempDir(), "spool.db"), opt: opt, clock: clk}
			e.s = openStore(t, e.path, opt)
			tt.run(e)
			check(t, e.s)
			if got := contents(t, e.s, "q"); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("queue = %q, want %q", got, tt.want)
			}
			if !reflect.DeepEqual(drops, tt.wantDrops) {
				t.Errorf("drops = %+v, want %+v", drops, tt.wantDrops)
			}
			n, bytes, _, err := e.s.Stats("q")
			var wantBytes int64
			for _, d := range tt.want {
				wantBytes += int64(len(d))
			}
			if err != nil || n != len(tt.want) || bytes != wantBytes {
				t.Errorf("Stats = %d items %d bytes (%v), want %d, %d", n, bytes, err, len(tt.want), wantBytes)
			}
		})
	}
}

// TestConcurrent pushes from several goroutines while another one delivers
// and acks, and checks that each producer's items arrive once, in order.
func TestConcurrent(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "spool.db"), Options{NoSync: true})
	const producers, each = 4, 50
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range each {
				key := fmt.Sprintf("%d-%03d", p, i)
				if _, _, err := s.Push("q", []byte(key), key); err != nil {
					t.Error(err)
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	last := map[string]string{}
	for got := 0; got < producers*each; {
		finished := false
		select {
		case <-done:
			finished = true
		default:
		}
		items, err := s.Peek("q", 7)
		if err != nil {
			t.Fatal(err)
		}
		if finished && len(items) == 0 {
			t.Fatalf("%d items delivered, want %d", got, producers*each)
		}
		for _, it := range items {
			p, _, _ := strings.Cut(string(it.Data), "-")
			if string(it.Data) <= last[p] {
				t.Fatalf("%q delivered after %q", it.Data, last[p])
			}
			last[p] = string(it.Data)
			if err := s.Ack("q", it.Seq); err != nil {
				t.Fatal(err)
			}
			got++
		}
	}
	<-done
	if n, _, _, err := s.Stats("q"); err != nil || n != 0 {
		t.Fatalf("Stats = %d, %v", n, err)
	}
	check(t, s)
}

// dedupeKeys lists the keys stored in the dedupe table, expired or not.
func dedupeKeys(t *testing.T, s *Store) []string {
	t.Helper()
	keys := []string{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return s.dedupe(tx).order.ForEach(func(_, v []byte) error {
			keys = append(keys, string(v[8:]))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func TestDedupeBounds(t *testing.T) {
	t.Run("count evicts the oldest", func(t *testing.T) {
		s := openStore(t, filepath.Join(t.TempDir(), "spool.db"), Options{NoSync: true, DedupeMax: 5})
		for i := range 10 {
			if i%2 == 0 {
				push(t, s, "q", "x", fmt.Sprint("k", i))
			} else if err := s.Mark(fmt.Sprint("k", i)); err != nil {
				t.Fatal(err)
			}
		}
		check(t, s)
		if got, want := dedupeKeys(t, s), []string{"k5", "k6", "k7", "k8", "k9"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("keys = %q, want %q", got, want)
		}
		for i := range 10 {
			if seen, _ := s.Seen(fmt.Sprint("k", i)); seen != (i >= 5) {
				t.Errorf("Seen(k%d) = %v", i, seen)
			}
		}
	})

	t.Run("TTL", func(t *testing.T) {
		clk := &clock{t0}
		path := filepath.Join(t.TempDir(), "spool.db")
		opt := Options{NoSync: true, DedupeTTL: time.Hour, now: clk.now}
		s := openStore(t, path, opt)
		for i := range 20 {
			if err := s.Mark(fmt.Sprint("old", i)); err != nil {
				t.Fatal(err)
			}
		}
		clk.advance(30 * time.Minute)
		push(t, s, "q", "x", "recent")
		clk.advance(31 * time.Minute)

		// Expired keys are not seen, pruned or not.
		if seen, _ := s.Seen("old0"); seen {
			t.Error("expired key seen")
		}
		if seen, _ := s.Seen("recent"); !seen {
			t.Error("recent key not seen")
		}
		// An expired key can be pushed again.
		push(t, s, "q", "y", "old0")
		check(t, s)
		// Pruning is incremental: one write prunes at most expiredBatch
		// expired keys (old0 was replaced, not pruned).
		if got, want := len(dedupeKeys(t, s)), 20+1+1-1-expiredBatch; got != want {
			t.Fatalf("%d keys after one write, want %d", got, want)
		}
		for _, k := range []string{"another", "another", "another2"} {
			if err := s.Mark(k); err != nil {
				t.Fatal(err)
			}
		}
		if got, want := dedupeKeys(t, s), []string{"recent", "old0", "another", "another2"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("keys = %q, want %q", got, want)
		}
		check(t, s)

		// Open prunes everything expired.
		clk.advance(45 * time.Minute)
		s.Close()
		s = openStore(t, path, opt)
		check(t, s)
		if got, want := dedupeKeys(t, s), []string{"old0", "another", "another2"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("keys after reopen = %q, want %q", got, want)
		}
	})
}

func TestLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool.db")
	openStore(t, path, Options{NoSync: true})
	_, err := Open(path, Options{lockTimeout: 50 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	t.Log(err)
}

func TestFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool.db")
	openStore(t, path, Options{NoSync: true})
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v", fi.Mode(), err)
	}
}

// TestInjectedWriteError fails every write transaction at commit time, as a
// full disk does, and checks that each write reports the error and changes
// nothing (no item, no dedupe key, no drop report), that reads still work,
// and that writes work again once the error clears.
func TestInjectedWriteError(t *testing.T) {
	var drops []Dropped
	path := filepath.Join(t.TempDir(), "spool.db")
	s := openStore(t, path, Options{NoSync: true, MaxItems: 2, OnDrop: func(d Dropped) { drops = append(drops, d) }})
	a := push(t, s, "q", "a", "ka")
	push(t, s, "q", "b", "kb")

	full := &os.PathError{Op: "write", Path: path, Err: syscall.ENOSPC}
	s.failWrite = func() error { return full }
	for _, w := range []struct {
		name string
		do   func() error
	}{
		{"push that would drop", func() error { _, _, err := s.Push("q", []byte("c"), "kc"); return err }},
		{"push to a new queue", func() error { _, _, err := s.Push("new", []byte("c"), ""); return err }},
		{"ack", func() error { return s.Ack("q", a) }},
		{"mark", func() error { return s.Mark("km") }},
	} {
		if err := w.do(); !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("%s on a full disk: %v, want ENOSPC", w.name, err)
		}
	}
	// Writes that change nothing do not fail.
	if _, dup, err := s.Push("q", []byte("a"), "ka"); err != nil || !dup {
		t.Errorf("dup push on a full disk: dup %v, %v", dup, err)
	}
	if err := s.Ack("q", 12345); err != nil {
		t.Errorf("no-op ack on a full disk: %v", err)
	}
	if n, _, _, err := s.Stats("q"); err != nil || n != 2 {
		t.Errorf("Stats on a full disk: %d, %v", n, err)
	}
	if got := contents(t, s, "q"); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("queue on a full disk: %q", got)
	}
	for _, k := range []string{"kc", "km"} {
		if seen, err := s.Seen(k); err != nil || seen {
			t.Errorf("Seen(%s) after failed write: %v, %v", k, seen, err)
		}
	}
	if len(drops) != 0 {
		t.Errorf("drops reported for failed writes: %+v", drops)
	}
	check(t, s)

	s.failWrite = nil
	if err := s.Ack("q", a); err != nil {
		t.Fatal(err)
	}
	push(t, s, "q", "c", "kc")
	push(t, s, "q", "d", "kd")
	if got := contents(t, s, "q"); !reflect.DeepEqual(got, []string{"c", "d"}) {
		t.Errorf("queue after recovery: %q", got)
	}
	if want := []Dropped{{Queue: "q", Items: 1, Bytes: 1, Reason: ReasonMaxItems}}; !reflect.DeepEqual(drops, want) {
		t.Errorf("drops = %+v, want %+v", drops, want)
	}
	check(t, s)
}

// helperEnv is set in the environment of a re-executed test binary to the
// helper it should run.
const helperEnv = "SPOOL_TEST_HELPER"

// TestHelperProcess is not a test: run by helper() in a child process, it
// runs the helper named in its environment and exits.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		t.Skip("helper process only")
	}
	err := fmt.Errorf("unknown helper %q", mode)
	if h := helpers[mode]; h != nil {
		err = h()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(2)
	}
	os.Exit(0)
}

// helpers are the helper processes by name. They take their arguments from
// the environment.
var helpers = map[string]func() error{
	"crash": func() error { return crashHelper(os.Getenv("SPOOL_TEST_DB"), os.Getenv("SPOOL_TEST_RUN")) },
}

// helper returns a command that re-executes the test binary as helper mode.
func helper(t *testing.T, mode string, env ...string) *exec.Cmd {
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(append(os.Environ(), helperEnv+"="+mode), env...)
	return cmd
}

// crashHelper pushes items to queue "q" forever with fsync on, printing
// "push <seq> <data>" once Push has returned, and acks every third item,
// printing "ack <seq>" once Ack has returned. Each item's data is its dedupe
// key, "<run>-<i>" with i counting up; each key is pushed twice, and the
// second must be a dup.
func crashHelper(path, run string) error {
	s, err := Open(path, Options{})
	if err != nil {
		return err
	}
	for i := 0; i < 1e6; i++ {
		key := fmt.Sprintf("%s-%06d", run, i)
		seq, dup, err := s.Push("q", []byte(key), key)
		if err != nil || dup {
			return fmt.Errorf("push %s: dup %v, %v", key, dup, err)
		}
		fmt.Printf("push %d %s\n", seq, key)
		if _, dup, err := s.Push("q", []byte(key), key); err != nil || !dup {
			return fmt.Errorf("second push %s: dup %v, %v", key, dup, err)
		}
		if i%3 == 0 {
			if err := s.Ack("q", seq); err != nil {
				return err
			}
			fmt.Printf("ack %d\n", seq)
		}
	}
	return errors.New("not killed")
}

// TestCrashSIGKILL kills a pushing process at random points and checks, after
// each kill, that the file opens cleanly and holds every item whose Push had
// returned and none whose Ack had returned, in order and without duplicates.
func TestCrashSIGKILL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool.db")
	pushed := map[uint64]string{} // printed pushes, over all runs
	acked := map[uint64]bool{}
	for run := range 5 {
		kill := 1 + rand.IntN(80) // lines to read before the kill
		cmd := helper(t, "crash", "SPOOL_TEST_DB="+path, fmt.Sprint("SPOOL_TEST_RUN=", run))
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		lines := 0
		for sc.Scan() {
			if lines++; lines == kill {
				cmd.Process.Kill() // SIGKILL
			}
			f := strings.Fields(sc.Text())
			seq, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				t.Fatalf("helper printed %q", sc.Text())
			}
			switch f[0] {
			case "push":
				if _, ok := pushed[seq]; ok {
					t.Fatalf("seq %d returned twice", seq)
				}
				pushed[seq] = f[2]
			case "ack":
				acked[seq] = true
			}
		}
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("run %d: helper was not killed: %v\n%s", run, err, stderr.String())
		}
		t.Logf("run %d: killed after %d lines (%d read)", run, kill, lines)

		s := openStore(t, path, Options{NoSync: true})
		check(t, s)
		items, err := s.Peek("q", 0)
		if err != nil {
			t.Fatal(err)
		}
		stored := map[uint64]string{}
		var prev Item
		for _, it := range items {
			if prev.Seq != 0 && (it.Seq <= prev.Seq || string(it.Data) <= string(prev.Data)) {
				t.Fatalf("out of order: seq %d %q after seq %d %q", it.Seq, it.Data, prev.Seq, prev.Data)
			}
			if acked[it.Seq] {
				t.Fatalf("acked item %d %q is back", it.Seq, it.Data)
			}
			stored[it.Seq] = string(it.Data)
			prev = it
		}
		for seq, data := range pushed {
			if seen, err := s.Seen(data); err != nil || !seen {
				t.Fatalf("key %s of a returned push not seen: %v", data, err)
			}
			if acked[seq] {
				continue
			}
			if got, ok := stored[seq]; !ok || got != data {
				t.Fatalf("returned push %d %q lost (stored %q, %v)", seq, data, got, ok)
			}
		}
		s.Close()
	}
	t.Logf("%d pushes and %d acks returned before kills", len(pushed), len(acked))
}

// BenchmarkPushAck measures one Push (with a dedupe key) and its Ack: two
// write transactions, each fsync'd unless NoSync.
func BenchmarkPushAck(b *testing.B) {
	data := make([]byte, 200) // a typical LoRa text payload and envelope
	for _, noSync := range []bool{false, true} {
		b.Run(fmt.Sprint("NoSync=", noSync), func(b *testing.B) {
			s := openStore(b, filepath.Join(b.TempDir(), "spool.db"), Options{NoSync: noSync})
			i := 0
			for b.Loop() {
				i++
				seq, _, err := s.Push("mesh->room", data, "mesh:!1234abcd:"+strconv.Itoa(i))
				if err != nil {
					b.Fatal(err)
				}
				if err := s.Ack("mesh->room", seq); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
