package testutil

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Mosquitto is a throwaway mosquitto broker on a free loopback port, with
// persistence saved at every change, so a SIGKILL keeps the sessions and
// queued messages that a power cut would keep on a real deployment.
type Mosquitto struct {
	Addr string // host:port
	URL  string // mqtt://host:port

	t    testing.TB
	bin  string
	conf string
	dir  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	logf *os.File
}

// MosquittoOption adjusts the broker's configuration file.
type MosquittoOption func(dir string) (confLines string)

// WithPasswordFile makes the broker require one user and password.
func WithPasswordFile(t testing.TB, user, pass string) MosquittoOption {
	return func(dir string) string {
		file := filepath.Join(dir, "passwd")
		cmd := exec.Command(NeedCommand(t, "mosquitto_passwd"), "-c", "-b", file, user, pass)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd: %v %s", err, out)
		}
		return "allow_anonymous false\npassword_file " + file + "\n"
	}
}

// WithSlowSaves keeps mosquitto's default of saving every 30 minutes (and
// at a clean stop), so a SIGKILL loses what the broker took meanwhile.
func WithSlowSaves() MosquittoOption {
	return func(string) string { return "autosave_interval 1800\n" }
}

// StartMosquitto starts a broker for the life of the test.
func StartMosquitto(t testing.TB, opts ...MosquittoOption) *Mosquitto {
	t.Helper()
	m := &Mosquitto{t: t, bin: NeedCommand(t, "mosquitto"), dir: t.TempDir()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m.Addr = ln.Addr().String()
	ln.Close()
	m.URL = "mqtt://" + m.Addr
	_, port, _ := net.SplitHostPort(m.Addr)
	conf := fmt.Sprintf("listener %s 127.0.0.1\npersistence true\npersistence_location %s/\nlog_type error\nlog_type warning\n", port, m.dir)
	// Run as root, mosquitto would switch to its own user, which cannot read
	// the test's directory; as anyone else this line is ignored.
	conf += "user root\n"
	// By default the broker saves at every change; WithSlowSaves keeps
	// mosquitto's own default instead.
	save := "autosave_interval 1\nautosave_on_changes true\n"
	anon := "allow_anonymous true\n"
	for _, o := range opts {
		switch line := o(m.dir); {
		case strings.HasPrefix(line, "autosave"):
			save = line
		default:
			anon = line
		}
	}
	conf += save
	m.conf = filepath.Join(m.dir, "mosquitto.conf")
	if err := os.WriteFile(m.conf, []byte(conf+anon), 0o600); err != nil {
		t.Fatal(err)
	}
	m.Start()
	t.Cleanup(m.Kill)
	return m
}

// Start (re)starts the broker on its port and waits until it accepts
// connections.
func (m *Mosquitto) Start() {
	m.t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		m.t.Fatal("mosquitto already running")
	}
	logf, err := os.OpenFile(filepath.Join(m.dir, "mosquitto.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		m.t.Fatal(err)
	}
	cmd := exec.Command(m.bin, "-c", m.conf)
	cmd.Dir = m.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		m.t.Fatalf("start mosquitto: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	m.cmd, m.done, m.logf = cmd, done, logf
	up := Poll(m.t.Context(), 10*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", m.Addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	if !up {
		log, _ := os.ReadFile(filepath.Join(m.dir, "mosquitto.log"))
		m.t.Fatalf("mosquitto did not listen on %s within 10 s:\n%s", m.Addr, log)
	}
}

// Kill stops the broker with SIGKILL, as a crash or a power cut would.
func (m *Mosquitto) Kill() { m.stop(syscall.SIGKILL) }

// Stop stops the broker with SIGTERM; it saves its state first.
func (m *Mosquitto) Stop() { m.stop(syscall.SIGTERM) }

func (m *Mosquitto) stop(sig syscall.Signal) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Signal(sig)
	<-m.done
	m.logf.Close()
	m.cmd = nil
}

// WaitSaved waits until the broker's persistence file holds every one of
// the given strings (a client id, a subscription's filter), so that a
// SIGKILL afterwards cannot lose them.
func (m *Mosquitto) WaitSaved(t testing.TB, parts ...string) {
	t.Helper()
	Eventually(t, 20*time.Second, func() bool {
		db, err := os.ReadFile(filepath.Join(m.dir, "mosquitto.db"))
		if err != nil {
			return false
		}
		for _, p := range parts {
			if !bytes.Contains(db, []byte(p)) {
				return false
			}
		}
		return true
	}, "mosquitto never saved %q", parts)
}
