// Package retry is the one reconnect loop of the bridge: an attempt, and
// after each failure a wait that doubles from a minimum to a cap, with
// jitter so that several bridges do not retry in step, logged once per
// distinct error.
package retry

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Policy says how long to wait between attempts.
type Policy struct {
	Min, Max time.Duration
	// Healthy is how long an attempt must have lasted for the next wait to
	// start again from Min: a link that held that long was not flapping.
	Healthy time.Duration
	// Tick, if set, is called at least once a second while waiting, so a
	// watchdog can tell a loop that waits from one that is wedged.
	Tick func()
}

// permanent marks an error that retrying cannot help.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// Permanent wraps err so that Run stops and returns it.
func Permanent(err error) error { return permanent{err} }

// Run calls attempt until ctx ends (then it returns nil) or attempt returns
// an error made by Permanent (then it returns that error's cause). After
// each other failure it waits and calls attempt again. An attempt that
// returns nil is a clean end of a healthy run and is retried at once.
//
// The first failure with a given message is logged at warn level with msg;
// the same failure again is logged at debug level, so an unplugged radio or
// an unreachable server writes one line, not one a minute.
func Run(ctx context.Context, p Policy, log *slog.Logger, msg string, attempt func(context.Context) error) error {
	if p.Min <= 0 {
		p.Min = time.Second
	}
	if p.Max < p.Min {
		p.Max = p.Min
	}
	tick := p.Tick
	if tick == nil {
		tick = func() {}
	}
	delay := p.Min
	var lastErr string
	for {
		tick()
		start := time.Now()
		err := attempt(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var perm permanent
		if errors.As(err, &perm) {
			return perm.err
		}
		if p.Healthy > 0 && time.Since(start) >= p.Healthy {
			delay = p.Min
		}
		if err == nil {
			lastErr = ""
			continue
		}
		if text := err.Error(); text != lastErr {
			log.Warn(msg, "err", err, "retry_in", delay.Round(time.Millisecond))
			lastErr = text
		} else {
			log.Debug(msg+" (again)", "err", err)
		}
		wait := Jitter(delay)
		delay = min(delay*2, p.Max)
		if !Sleep(ctx, wait, tick) {
			return nil
		}
	}
}

// Jitter returns a duration drawn evenly from [d/2, d].
func Jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// Sleep waits d, or until ctx ends (then it reports false), calling tick
// at least once a second meanwhile.
func Sleep(ctx context.Context, d time.Duration, tick func()) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	beat := time.NewTicker(time.Second)
	defer beat.Stop()
	for {
		if tick != nil {
			tick()
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case <-beat.C:
		}
	}
}
