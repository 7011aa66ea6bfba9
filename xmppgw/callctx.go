package xmppgw

import (
	"context"
	"sync"
	"time"
)

// callCtx returns the context for one call into the XMPP library: it ends
// when ctx ends or after d, but never once release has been called.
//
// mellium (v0.22) bounds every write, and session negotiation, by arming a
// goroutine that puts the connection's deadline in the past when the call's
// context is done; when the call returns it tells that goroutine to stand
// down. If the goroutine has not been scheduled yet by the time the caller
// also cancels the context (the usual defer cancel() right after the call),
// it sees both signals and picks one at random, and so may set the deadline
// in the past in the middle of a later, unrelated write. That write fails
// with an i/o timeout after part of a TLS record went out; crypto/tls then
// refuses every further write and the server drops the stream ("bad record
// mac"). Under load this happens to about one write in tens of thousands.
// Here the context handed to the library is cancelled only while the call
// is still running.
func callCtx(ctx context.Context, d time.Duration) (context.Context, func()) {
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var mu sync.Mutex
	returned := false
	abort := func() {
		mu.Lock()
		defer mu.Unlock()
		if !returned {
			cancel()
		}
	}
	timer := time.AfterFunc(d, abort)
	stop := context.AfterFunc(ctx, abort)
	return cctx, func() {
		mu.Lock()
		returned = true
		mu.Unlock()
		timer.Stop()
		stop()
	}
}
