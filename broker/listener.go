package broker

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// guardedListener is the embedded broker's TCP listener. mochi's own waits
// for ever for a client's CONNECT, admits any number of sockets and logs
// each ended connection as a warning with an empty message. This one closes
// a connection that has not sent CONNECT within connectTimeout, refuses
// sockets beyond maxConns, closes every socket it accepted on Close and
// logs connection ends at debug level, so a port scan or a slow-loris
// neither fills the memory of a small board nor holds up shutdown.
type guardedListener struct {
	id             string
	ln             net.Listener
	connectTimeout time.Duration
	maxConns       int
	log            *slog.Logger

	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	refusing bool // at the cap; logged once until a place frees
	wg       sync.WaitGroup
}

func newGuardedListener(id string, ln net.Listener, connectTimeout time.Duration, maxConns int, log *slog.Logger) *guardedListener {
	return &guardedListener{id: id, ln: ln, connectTimeout: connectTimeout, maxConns: maxConns, log: log, conns: map[net.Conn]struct{}{}}
}

func (l *guardedListener) ID() string              { return l.id }
func (l *guardedListener) Address() string         { return l.ln.Addr().String() }
func (l *guardedListener) Protocol() string        { return "tcp" }
func (l *guardedListener) Init(*slog.Logger) error { return nil }

// Serve accepts connections until the listener is closed.
func (l *guardedListener) Serve(establish listeners.EstablishFn) {
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			return // closed
		}
		if !l.admit(conn) {
			conn.Close()
			continue
		}
		// mochi replaces this deadline with the client's keep-alive once
		// the CONNECT has been read.
		_ = conn.SetDeadline(time.Now().Add(l.connectTimeout))
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer l.release(conn)
			err := establish(l.id, conn)
			switch {
			case err == nil, errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
				l.log.Debug("mqtt client disconnected", "remote", conn.RemoteAddr().String())
			default:
				l.log.Debug("mqtt client connection ended", "remote", conn.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// admit counts a new connection in, or refuses it at the cap.
func (l *guardedListener) admit(conn net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conns == nil { // closed
		return false
	}
	if len(l.conns) >= l.maxConns {
		if !l.refusing {
			l.refusing = true
			l.log.Warn("too many MQTT connections; refusing new ones until some close", "limit", l.maxConns, "remote", conn.RemoteAddr().String())
		}
		return false
	}
	l.refusing = false
	l.conns[conn] = struct{}{}
	return true
}

func (l *guardedListener) release(conn net.Conn) {
	conn.Close()
	l.mu.Lock()
	delete(l.conns, conn)
	l.mu.Unlock()
}

// Close stops accepting, disconnects mochi's clients, closes every socket
// still open (connected or not) and waits for their goroutines.
func (l *guardedListener) Close(closeClients listeners.CloseFn) {
	l.ln.Close()
	closeClients(l.id)
	l.mu.Lock()
	for c := range l.conns {
		c.Close()
	}
	l.conns = nil
	l.mu.Unlock()
	l.wg.Wait()
}

// open reports the number of sockets open, connected or not.
func (l *guardedListener) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}
