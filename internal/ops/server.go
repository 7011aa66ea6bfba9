package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"
)

// State is how one side of the bridge is doing.
type State string

const (
	Up   State = "up"
	Down State = "down"
	Off  State = "off" // not configured
)

// StateOf is Up if up, else Down.
func StateOf(up bool) State {
	if up {
		return Up
	}
	return Down
}

// Airtime is whether the bridge's airtime share lets packets go to the mesh.
type Airtime string

const (
	AirtimeOK Airtime = "ok"
	// AirtimeBlocked: packets for the mesh wait because the share is spent
	// for now. The bridge is up, but the mesh is not getting what it is
	// sent, and people are waiting: a degraded state.
	AirtimeBlocked Airtime = "blocked"
)

// Health is the state of each side of the bridge, as /healthz reports it.
// Every field must be set: an empty one counts as not up.
type Health struct {
	Radio   State   `json:"radio"`
	XMPP    State   `json:"xmpp"`
	MQTT    State   `json:"mqtt"`
	Airtime Airtime `json:"airtime"`
}

// OK reports whether every configured side is up and packets for the mesh
// are not held back for airtime.
func (h Health) OK() bool {
	for _, s := range []State{h.Radio, h.XMPP, h.MQTT} {
		if s != Up && s != Off {
			return false
		}
	}
	return h.Airtime == AirtimeOK
}

// ErrNotLoopback refuses a metrics address other hosts could reach.
var ErrNotLoopback = errors.New("metrics address is not a loopback address")

// DefaultShutdownTimeout bounds how long Run waits for requests in flight
// once its context ends.
const DefaultShutdownTimeout = 5 * time.Second

// ServerConfig configures the metrics and health endpoint.
type ServerConfig struct {
	// Listen is the --metrics-listen address; "" or "off" disables the
	// endpoint.
	Listen string
	// AllowRemote permits a Listen address that is not loopback. The
	// endpoint has no authentication, and the metrics and health reveal the
	// radio's node id, which links are up and how busy the mesh is: who
	// runs a node and when it is in use. Exposing that beyond the host must
	// be a deliberate choice, typically behind a reverse proxy or firewall.
	AllowRemote bool
	// Metrics is served on /metrics; nil serves no /metrics.
	Metrics *Metrics
	// Health is served on /healthz; nil serves no /healthz. It is called
	// for every request, concurrently, so it must be cheap and safe.
	Health func() Health
	// ShutdownTimeout overrides DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// Log receives the HTTP server's errors; nil discards them.
	Log *slog.Logger
}

// Server is the metrics and health endpoint. A nil *Server is a disabled
// endpoint: Run returns at once and Addr is nil.
type Server struct {
	ln      net.Listener
	srv     *http.Server
	timeout time.Duration
	log     *slog.Logger
}

// NewServer listens on c.Listen, so that a bad or busy address fails before
// the bridge starts. It returns a nil Server, and no error, if the endpoint
// is off. Run serves it.
func NewServer(c ServerConfig) (*Server, error) {
	if c.Listen == "" || c.Listen == "off" {
		return nil, nil
	}
	if !c.AllowRemote {
		if err := checkLoopback(c.Listen); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	// A host name checked above may resolve differently now: check what
	// was actually bound.
	if tcp, ok := ln.Addr().(*net.TCPAddr); !c.AllowRemote && (!ok || !tcp.IP.IsLoopback()) {
		ln.Close()
		return nil, fmt.Errorf("%w: %s bound %s", ErrNotLoopback, c.Listen, ln.Addr())
	}

	log := c.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	if c.Metrics != nil {
		mux.Handle("GET /metrics", c.Metrics.Handler())
	}
	if c.Health != nil {
		mux.Handle("GET /healthz", healthHandler(c.Health))
	}
	timeout := c.ShutdownTimeout
	if timeout <= 0 {
		timeout = DefaultShutdownTimeout
	}
	return &Server{
		ln: ln,
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
		timeout: timeout,
		log:     log,
	}, nil
}

// Addr is the address the endpoint listens on.
func (s *Server) Addr() net.Addr {
	if s == nil {
		return nil
	}
	return s.ln.Addr()
}

// Run serves until ctx ends, then shuts down: it stops accepting, waits up to
// the shutdown timeout for requests in flight, and closes what remains. It
// returns nil after a shutdown, or the error that stopped the server.
func (s *Server) Run(ctx context.Context) error {
	if s == nil {
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- s.srv.Serve(s.ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("metrics server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		s.log.Warn("metrics server: requests still running at shutdown; closing them", "err", err)
		s.srv.Close()
	}
	<-done // http.ErrServerClosed
	// Serve closes the listener, unless the shutdown came before it started.
	s.ln.Close()
	return nil
}

// Close releases the listener of a Server that will not Run.
func (s *Server) Close() error {
	if s == nil {
		return nil
	}
	return s.ln.Close()
}

func healthHandler(health func() Health) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h := health()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if h.OK() {
			w.WriteHeader(http.StatusOK)
		} else {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		json.NewEncoder(w).Encode(h)
	})
}

// checkLoopback accepts host:port addresses whose host is a loopback
// address or a name that resolves only to loopback addresses. An empty host
// means every interface.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("metrics address: %w", err)
	}
	if host == "" {
		return fmt.Errorf("%w: %q listens on every interface", ErrNotLoopback, addr)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if !ip.Unmap().IsLoopback() {
			return fmt.Errorf("%w: %s", ErrNotLoopback, addr)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return fmt.Errorf("metrics address: %w", err)
	}
	for _, ip := range ips {
		if !ip.Unmap().IsLoopback() {
			return fmt.Errorf("%w: %s resolves to %s", ErrNotLoopback, host, ip)
		}
	}
	return nil
}
