package retry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestRunLogsEachDistinctErrorOnceAndStopsOnPermanent(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	errs := []error{
		errors.New("no such device"), errors.New("no such device"), errors.New("no such device"),
		errors.New("connection refused"), Permanent(fmt.Errorf("login: %w", errDenied)),
	}
	calls := 0
	err := Run(context.Background(), Policy{Min: time.Microsecond, Max: 4 * time.Microsecond}, log, "radio not reachable", func(context.Context) error {
		e := errs[calls]
		calls++
		return e
	})
	if !errors.Is(err, errDenied) || calls != len(errs) {
		t.Fatalf("Run = %v after %d calls, want errDenied after %d", err, calls, len(errs))
	}
	var warns, debugs int
	for _, line := range strings.Split(buf.String(), "\n") {
		switch {
		case strings.Contains(line, "level=WARN"):
			warns++
		case strings.Contains(line, "level=DEBUG"):
			debugs++
		}
	}
	if warns != 2 || debugs != 2 {
		t.Errorf("%d warnings and %d debug lines, want 2 and 2:\n%s", warns, debugs, buf.String())
	}
}

var errDenied = errors.New("not authorized")

func TestRunEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := Run(ctx, Policy{Min: time.Hour, Max: time.Hour}, slog.New(slog.DiscardHandler), "down", func(context.Context) error {
		calls++
		cancel()
		return errors.New("down")
	})
	if err != nil || calls != 1 {
		t.Fatalf("Run = %v after %d calls, want nil after 1", err, calls)
	}
}

func TestBackoffDoublesToCapAndResetsAfterHealthyRun(t *testing.T) {
	// The wait before each attempt is read off the clock: each must lie in
	// [d/2, d] of the doubling delay, and a healthy attempt resets it.
	var starts []time.Time
	healthy := 40 * time.Millisecond
	plan := []time.Duration{0, 0, 0, 0, healthy, 0}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_ = Run(ctx, Policy{Min: 4 * time.Millisecond, Max: 16 * time.Millisecond, Healthy: healthy}, slog.New(slog.DiscardHandler), "x",
		func(context.Context) error {
			starts = append(starts, time.Now())
			if len(starts) > len(plan) {
				cancel()
				return nil
			}
			time.Sleep(plan[len(starts)-1])
			return errors.New("x")
		})
	// Delays before attempts 2..7: 4, 8, 16, 16 ms, then after the healthy
	// attempt 4 ms again, then 8 ms.
	want := []time.Duration{4, 8, 16, 16, 4, 8}
	for i, w := range want {
		w *= time.Millisecond
		gap := starts[i+1].Sub(starts[i]) - plan[i]
		if gap < w/2 {
			t.Errorf("wait before attempt %d = %v, want at least %v", i+2, gap, w/2)
		}
	}
}

func TestJitterRange(t *testing.T) {
	for range 1000 {
		if j := Jitter(10 * time.Millisecond); j < 5*time.Millisecond || j > 10*time.Millisecond {
			t.Fatalf("Jitter = %v, outside [5ms, 10ms]", j)
		}
	}
}
