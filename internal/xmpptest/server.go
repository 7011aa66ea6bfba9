// Package xmpptest runs real XMPP servers (Prosody, ejabberd) for tests and
// provides a small mellium-based client to act as a second MUC occupant.
//
// Servers listen on free loopback ports, use a throwaway CA generated per
// server, and are stopped by t.Cleanup. Readiness is established by a real
// stream exchange, never by sleeping.
//
// The Server methods that report failures (Start, Stop, Kill, AddAccount) call
// t.Fatalf and therefore must be called from the test goroutine.
package xmpptest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
)

// Option configures StartProsody and StartEjabberd.
type Option func(*options)

type account struct{ user, pass string }

type options struct {
	accounts []account
	// publicJIDs makes rooms non-anonymous: every occupant sees the
	// others' real JIDs.
	publicJIDs bool
	// debug raises the server's log level, from XMPPTEST_DEBUG=1: useful
	// when a test fails, noisy otherwise. XMPPTEST_TRACE=1 shows the
	// clients' raw XML.
	debug bool
}

// WithAccount registers user@Domain with the given password before the
// test gets the server.
func WithAccount(user, pass string) Option {
	return func(o *options) { o.accounts = append(o.accounts, account{user, pass}) }
}

// WithPublicJIDs makes new rooms non-anonymous (Prosody only): every
// occupant sees the others' real JIDs.
func WithPublicJIDs() Option { return func(o *options) { o.publicJIDs = true } }

// Server is a running (or stopped) XMPP server owned by one test.
type Server struct {
	Kind          string // "prosody" or "ejabberd"
	Domain        string // "localhost"
	MUCDomain     string // "conference.localhost"
	Addr          string // host:port of the STARTTLS c2s listener
	DirectTLSAddr string // host:port of the direct-TLS (XEP-0368) c2s listener
	CAFile        string // PEM file of the throwaway CA that signed the server cert
	Dir           string // working directory with config, data, certs and logs
	LogFile       string // the server's main log file

	t     testing.TB
	b     backend
	opts  options
	roots *x509.CertPool

	mu       sync.Mutex
	p        *process
	frozen   bool
	killed   bool // last stop was Kill
	accounts []account
}

// backend holds what differs between server implementations.
type backend interface {
	// numPorts is the number of loopback ports to allocate; the first two
	// are the STARTTLS and the direct-TLS c2s ports.
	numPorts() int
	// configure writes the configuration for the given ports.
	configure(s *Server, ports []int) error
	command(s *Server) (*exec.Cmd, error)
	// register adds an account. online tells whether the server is running.
	// It returns errNeedsRunning if the backend can only register online.
	register(ctx context.Context, s *Server, user, pass string, online bool) error
	// termPIDs are the processes that get SIGTERM for a graceful stop.
	termPIDs(p *process) []int
	// portRace reports whether the logs show a failed bind.
	portRace(s *Server) bool
	// logFiles are dumped (tail) when a test fails.
	logFiles(s *Server) []string
	// lifeline asks for stdin to be a pipe whose write end only this
	// process holds; it is closed when the main process exited (or when
	// the test binary dies), so the command can clean up its process group.
	lifeline() bool
	// lossyKill reports that accounts registered shortly before a SIGKILL
	// may be lost (ejabberd keeps them in a dets table that is synced
	// lazily), so Start after Kill registers them again.
	lossyKill() bool
}

var errNeedsRunning = errors.New("server must be running to register accounts")
var errPortRace = errors.New("port already in use")

type process struct {
	cmd  *exec.Cmd
	pgid int
	done chan struct{}
	err  error // valid after done is closed
}

const (
	stopGrace  = 8 * time.Second
	probeEvery = 20 * time.Millisecond
)

// RootCAs returns a pool holding only the server's throwaway CA.
func (s *Server) RootCAs() *x509.CertPool { return s.roots }

// TLSConfig returns a client TLS config that trusts the server's CA and
// verifies the XMPP domain.
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{ServerName: s.Domain, RootCAs: s.roots, MinVersion: tls.VersionTLS12}
}

// Running reports whether the server process is up (it may be frozen).
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.p == nil {
		return false
	}
	select {
	case <-s.p.done:
		return false
	default:
		return true
	}
}

// Stop stops the server gracefully (SIGTERM) and waits until it has exited.
// A server that does not exit within a bound is killed and the test fails.
// Data and accounts are kept for Start.
func (s *Server) Stop() {
	s.t.Helper()
	p, frozen := s.take()
	if p == nil {
		return
	}
	if err := s.stopProcess(p, frozen, stopGrace); err != nil {
		s.t.Fatalf("xmpptest: stop %s: %v", s.Kind, err)
	}
}

// Kill stops the server with SIGKILL and waits until it is gone.
func (s *Server) Kill() {
	s.t.Helper()
	p, _ := s.take()
	if p == nil {
		return
	}
	killGroup(p)
	s.mu.Lock()
	s.killed = true
	s.mu.Unlock()
}

// Start starts a stopped server again, with the same ports, data and
// accounts, and waits until it answers a stream header.
func (s *Server) Start() {
	s.t.Helper()
	s.mu.Lock()
	running := s.p != nil
	s.mu.Unlock()
	if running {
		s.t.Fatalf("xmpptest: Start: %s is already running", s.Kind)
	}
	if err := s.launch(false); err != nil {
		s.t.Fatalf("xmpptest: restart %s: %v", s.Kind, err)
	}
	s.mu.Lock()
	reregister := s.killed && s.b.lossyKill()
	s.killed = false
	accounts := slices.Clone(s.accounts)
	s.mu.Unlock()
	if reregister {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.registerAll(ctx, accounts); err != nil {
			s.t.Fatalf("xmpptest: re-register accounts after kill: %v", err)
		}
	}
}

// Freeze stops the server with SIGSTOP: connections stay open but nothing
// is answered, like a silently dead link. Thaw resumes it.
func (s *Server) Freeze() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.p == nil {
		s.t.Fatalf("xmpptest: Freeze: %s is not running", s.Kind)
	}
	if err := syscall.Kill(-s.p.pgid, syscall.SIGSTOP); err != nil {
		s.t.Fatalf("xmpptest: SIGSTOP: %v", err)
	}
	s.frozen = true
}

// Thaw resumes a frozen server (SIGCONT).
func (s *Server) Thaw() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.p == nil {
		return
	}
	if err := syscall.Kill(-s.p.pgid, syscall.SIGCONT); err != nil {
		s.t.Fatalf("xmpptest: SIGCONT: %v", err)
	}
	s.frozen = false
}

// AddAccount registers user@Domain. Prosody accepts this whether or not it
// is running; ejabberd only while it is running.
func (s *Server) AddAccount(user, pass string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.b.register(ctx, s, user, pass, s.Running()); err != nil {
		s.t.Fatalf("xmpptest: register %s: %v", user, err)
	}
	s.mu.Lock()
	s.accounts = append(s.accounts, account{user, pass})
	s.mu.Unlock()
}

// LogTail returns the last n lines of the server's log files.
func (s *Server) LogTail(n int) string {
	var b strings.Builder
	for _, f := range s.b.logFiles(s) {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > n {
			lines = lines[len(lines)-n:]
		}
		if len(lines) == 1 && lines[0] == "" {
			continue
		}
		fmt.Fprintf(&b, "==> %s <==\n%s\n", f, strings.Join(lines, "\n"))
	}
	return b.String()
}

func (s *Server) take() (*process, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, frozen := s.p, s.frozen
	s.p, s.frozen = nil, false
	return p, frozen
}

// start is the shared body of StartProsody and StartEjabberd.
func (s *Server) start() {
	t := s.t
	t.Helper()
	t.Cleanup(func() {
		p, frozen := s.take()
		if p != nil {
			// The server is gone either way (killed if slow): a slow exit on
			// a loaded machine says nothing of what the test tested.
			if err := s.stopProcess(p, frozen, stopGrace); err != nil {
				t.Logf("xmpptest: stop %s in cleanup: %v", s.Kind, err)
			}
		}
		if t.Failed() {
			t.Logf("xmpptest: %s logs (tail):\n%s", s.Kind, s.LogTail(60))
		}
	})
	if err := s.launch(true); err != nil {
		t.Fatalf("xmpptest: start %s: %v", s.Kind, err)
	}
	// Accounts the backend could not register offline.
	var todo []account
	for _, a := range s.opts.accounts {
		if !s.hasAccount(a.user) {
			todo = append(todo, a)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.registerAll(ctx, todo); err != nil {
		t.Fatalf("xmpptest: %v", err)
	}
	s.mu.Lock()
	s.accounts = append(s.accounts, todo...)
	s.mu.Unlock()
}

// registerAll registers accounts on the running server, in parallel.
func (s *Server) registerAll(ctx context.Context, accounts []account) error {
	var wg sync.WaitGroup
	errs := make([]error, len(accounts))
	for i, a := range accounts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.b.register(ctx, s, a.user, a.pass, true); err != nil {
				errs[i] = fmt.Errorf("register %s on %s: %w", a.user, s.Kind, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (s *Server) hasAccount(user string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.accounts {
		if a.user == user {
			return true
		}
	}
	return false
}

// launch starts the process and waits until it is ready. With fresh, it
// allocates ports, writes the config and registers offline accounts first,
// and retries with new ports on a bind race.
func (s *Server) launch(fresh bool) error {
	attempts := 1
	if fresh {
		attempts = 5
	}
	var lastErr error
	for i := 0; i < attempts; i++ {
		if fresh {
			ports, err := pickPorts(s.b.numPorts())
			if err != nil {
				return err
			}
			s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
			s.DirectTLSAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
			if err := s.b.configure(s, ports); err != nil {
				return fmt.Errorf("configure: %w", err)
			}
			if err := s.registerOffline(); err != nil {
				return err
			}
			// A bind race is recognised in the log, so start with an empty one.
			for _, f := range s.b.logFiles(s) {
				_ = os.Remove(f)
			}
		}
		p, err := s.spawn()
		if err != nil {
			return err
		}
		err = s.waitReady(p)
		if err == nil {
			s.mu.Lock()
			s.p = p
			s.mu.Unlock()
			return nil
		}
		killGroup(p)
		lastErr = err
		if !errors.Is(err, errPortRace) {
			break
		}
	}
	return lastErr
}

func (s *Server) registerOffline() error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, a := range s.opts.accounts {
		if s.hasAccount(a.user) {
			continue
		}
		err := s.b.register(ctx, s, a.user, a.pass, false)
		if errors.Is(err, errNeedsRunning) {
			continue
		}
		if err != nil {
			return fmt.Errorf("register %s: %w", a.user, err)
		}
		s.mu.Lock()
		s.accounts = append(s.accounts, a)
		s.mu.Unlock()
	}
	return nil
}

func (s *Server) spawn() (*process, error) {
	cmd, err := s.b.command(s)
	if err != nil {
		return nil, err
	}
	out, err := os.OpenFile(s.stdoutFile(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer out.Close() // the child has its own copy
	cmd.Stdout, cmd.Stderr = out, out
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	var lifeline *os.File
	if s.b.lifeline() {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		defer r.Close() // the child has its own copy
		cmd.Stdin, lifeline = r, w
	}
	if err := cmd.Start(); err != nil {
		if lifeline != nil {
			lifeline.Close()
		}
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	p := &process{cmd: cmd, pgid: cmd.Process.Pid, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		if lifeline != nil {
			lifeline.Close()
		}
		close(p.done)
	}()
	return p, nil
}

func (s *Server) stdoutFile() string { return s.Dir + "/" + s.Kind + ".stdout" }

func (s *Server) readyTimeout() time.Duration {
	if s.Kind == "ejabberd" {
		return 30 * time.Second
	}
	return 10 * time.Second
}

// waitReady polls until both c2s ports answer a stream header with
// stream features, the process dies, or the timeout passes.
func (s *Server) waitReady(p *process) error {
	timeout := s.readyTimeout()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		select {
		case <-p.done:
			if s.b.portRace(s) {
				return errPortRace
			}
			return fmt.Errorf("%s exited before it was ready (%v); see %s and %s", s.Kind, p.err, s.LogFile, s.stdoutFile())
		default:
		}
		if s.b.portRace(s) {
			return errPortRace
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = probeStream(ctx, s.Addr, s.Domain, nil)
		if err == nil {
			err = probeStream(ctx, s.DirectTLSAddr, s.Domain, s.TLSConfig())
		}
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v: %v", s.Kind, timeout, err)
		}
		select {
		case <-p.done:
		case <-time.After(probeEvery):
		}
	}
}

// probeStream opens a client stream to addr (over TLS if cfg is set) and
// reads until the complete <stream:features>.
func probeStream(ctx context.Context, addr, domain string, cfg *tls.Config) error {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer raw.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	conn := raw
	if cfg != nil {
		cfg = cfg.Clone()
		cfg.NextProtos = []string{"xmpp-client"}
		tc := tls.Client(raw, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("TLS handshake with %s: %w", addr, err)
		}
		conn = tc
	}
	_, err = fmt.Fprintf(conn, "<?xml version='1.0'?><stream:stream to='%s' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>", domain)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	chunk := make([]byte, 4096)
	for buf.Len() < 1<<20 {
		n, err := conn.Read(chunk)
		buf.Write(chunk[:n])
		b := buf.Bytes()
		if i := bytes.Index(b, []byte("<stream:features")); i >= 0 {
			rest := b[i:]
			if bytes.Contains(rest, []byte("</stream:features>")) || bytes.HasPrefix(rest, []byte("<stream:features/>")) {
				_, _ = io.WriteString(conn, "</stream:stream>")
				return nil
			}
		}
		if bytes.Contains(b, []byte("<stream:error")) {
			return fmt.Errorf("stream error from %s: %s", addr, b)
		}
		if err != nil {
			return fmt.Errorf("reading features from %s: %w (got %q)", addr, err, b)
		}
	}
	return fmt.Errorf("no stream features from %s", addr)
}

// stopProcess sends SIGTERM to the backend's main process(es) and waits for
// the whole process group to disappear; after grace it uses SIGKILL.
func (s *Server) stopProcess(p *process, frozen bool, grace time.Duration) error {
	if frozen {
		_ = syscall.Kill(-p.pgid, syscall.SIGCONT)
	}
	for _, pid := range s.b.termPIDs(p) {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		killGroup(p)
		return fmt.Errorf("%s did not exit within %v after SIGTERM; killed", s.Kind, grace)
	}
	if !waitGroupGone(p.pgid, grace) {
		killGroup(p)
		return fmt.Errorf("%s left processes behind after exiting; killed", s.Kind)
	}
	return nil
}

func killGroup(p *process) {
	_ = syscall.Kill(-p.pgid, syscall.SIGKILL)
	<-p.done
	waitGroupGone(p.pgid, 5*time.Second)
}

// waitGroupGone polls until no live (non-zombie) process is left in the
// process group.
func waitGroupGone(pgid int, timeout time.Duration) bool {
	return testutil.Poll(context.Background(), timeout, func() bool { return len(groupMembers(pgid)) == 0 })
}

type procInfo struct {
	pid  int
	comm string
}

// groupMembers lists the live processes in a process group, from /proc.
func groupMembers(pgid int) []procInfo {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []procInfo
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...
		open, close := bytes.IndexByte(data, '('), bytes.LastIndexByte(data, ')')
		if open < 0 || close < open {
			continue
		}
		f := strings.Fields(string(data[close+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, _ := strconv.Atoi(f[2]); g == pgid {
			out = append(out, procInfo{pid: pid, comm: string(data[open+1 : close])})
		}
	}
	return out
}

// pickPorts is freePorts; tests replace it to provoke a bind race.
var pickPorts = freePorts

// freePorts returns n distinct free loopback TCP ports. They are released
// before returning, so a bind race is possible; launch retries on it.
func freePorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
