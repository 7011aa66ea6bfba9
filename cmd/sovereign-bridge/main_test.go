package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sovereign-bridge-test")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "sovereign-bridge")
	if out, err := exec.Command("go", "build", "-ldflags", "-X main.version=test-1.2.3", "-o", binary, ".").CombinedOutput(); err != nil {
		panic(string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Every bad invocation ends with one clear line and EX_CONFIG, so systemd
// does not restart it in a loop.
func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	badFile := filepath.Join(dir, "bad.toml")
	os.WriteFile(badFile, []byte("colour = \"blue\"\n"), 0o600)
	nanFile := filepath.Join(dir, "nan.toml")
	os.WriteFile(nanFile, []byte("airtime-share = nan\n"), 0o600)
	creds := func(name, content string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o600)
		return p
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--device", "ttyUSB0"}, "--device"},
		{[]string{"--device", "tcp://"}, "no host"},
		{[]string{"--mqtt-listen", "0.0.0.0:1883"}, "--mqtt-credentials"},
		{[]string{"--mqtt-broker", "http://example.org"}, "scheme"},
		{[]string{"--log-level", "loud"}, "--log-level"},
		{[]string{"--log-format", "xml"}, "--log-format"},
		{[]string{"--bogus"}, "bogus"},
		{[]string{"--bogus"}, "sovereign-bridge -h"},
		{[]string{"--airtime-share", "NaN"}, "--airtime-share"},
		{[]string{"--device", "none"}, "--device none"},
		{[]string{"--mqtt-listen", "127.0.0.1:99999"}, "65535"},
		{[]string{"--mqtt-listen", "127.0.0.1:abc"}, "--mqtt-listen"},
		{[]string{"--mqtt-broker", "mqtt://127.0.0.1", "--mqtt-credentials", "/x"}, "--mqtt-credentials is for the embedded broker"},
		{[]string{"--mqtt-broker-ca", "/x"}, "go with --mqtt-broker"},
		{[]string{"--mqtt-broker", "mqtt://127.0.0.1", "--mqtt-broker-password-file", filepath.Join(dir, "no-such-pw")}, "no-such-pw"},
		{[]string{"--config", nanFile}, "--airtime-share"},
		{[]string{"--airtime-share", "0"}, "--airtime-share"},
		{[]string{"--text-interval", "0"}, "--text-interval"},
		{[]string{"--mqtt-root", "msh/#"}, "--mqtt-root"},
		{[]string{"--mqtt-root", "msh/+/x"}, "--mqtt-root"},
		{[]string{"--mesh", "valley/north"}, "--mesh"},
		{[]string{"--mesh", strings.Repeat("m", 65)}, "at most 64"},
		{[]string{"--mesh", "valley\x1b[2J"}, "--mesh"},
		{[]string{"--device", "tcp://host:99999"}, "65535"},
		{[]string{"--device", "tcp://:0"}, "no host"},
		{[]string{"--mqtt-max-connections", "0"}, "--mqtt-max-connections"},
		{[]string{"--mqtt-credentials", filepath.Join(dir, "no-such-users.yaml")}, "no-such-users.yaml"},
		{[]string{"--mqtt-credentials", creds("empty.yaml", "")}, "empty"},
		{[]string{"--mqtt-credentials", creds("garbage.yaml", "users: [\n")}, "not a credentials file"},
		{[]string{"--mqtt-credentials", creds("typo.yaml", "users:\n  ha:\n    pasword: x\n")}, "pasword"},
		{[]string{"-j", "bot@example.org", "-p", "hunter2", "-r", "r@c.example.org", "-n", "n", "--xmpp-max-parts", "-5"}, "--xmpp-max-parts"},
		{[]string{"-j", "bot@example.org", "-p", "hunter2", "-r", "r@c.example.org", "-n", "n", "--xmpp-max-parts", "0"}, "--xmpp-max-parts"},
		{[]string{"stray"}, "unexpected argument"},
		{[]string{"--config", badFile}, `unknown setting "colour"`},
		{[]string{"--config", filepath.Join(dir, "missing.toml")}, "missing.toml"},
		{[]string{"-j", "bot@example.org", "-p", "hunter2"}, "no room"},
		{[]string{"-j", "bot@example.org", "-p", "hunter2", "--password-file", "/x", "-r", "r@c.example.org", "-n", "n"}, "not both"},
		{[]string{"-j", "bot@example.org", "-r", "r@c.example.org", "-n", "n"}, "--password-file"},
		{[]string{"-j", "bot@example.org", "--password-file", filepath.Join(dir, "nope"), "-r", "r@c.example.org", "-n", "n"}, "nope"},
		{[]string{"-j", "not a jid@", "-p", "hunter2", "-r", "r@c.example.org", "-n", "n"}, "-j"},
		{[]string{"-j", "bot@example.org", "-p", "hunter2", "-r", "r@c.example.org"}, "nick"},
		{[]string{"-r", "r@c.example.org"}, "without -j"},
		{[]string{"-j", "bot@example.org", "-p", "hunter2", "-r", "r@c.example.org", "-n", "n", "--xmpp-server", "nohost"}, "--xmpp-server"},
	}
	for _, tt := range tests {
		cmd := exec.Command(binary, tt.args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 78 {
			t.Errorf("%v: err %v, want exit status 78", tt.args, err)
		}
		if !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("%v: stderr %q does not mention %q", tt.args, stderr.String(), tt.want)
		}
		if lines := strings.Count(strings.TrimRight(stderr.String(), "\n"), "\n") + 1; lines != 1 {
			t.Errorf("%v: %d lines on stderr, want one:\n%s", tt.args, lines, stderr.String())
		}
		if strings.Contains(stderr.String(), "hunter2") {
			t.Errorf("%v: the password appears in the output", tt.args)
		}
	}
}

func TestVersion(t *testing.T) {
	out, err := exec.Command(binary, "--version").Output()
	if err != nil || strings.TrimSpace(string(out)) != "sovereign-bridge test-1.2.3" {
		t.Errorf("--version = %q, %v", out, err)
	}
}

var listenRE = regexp.MustCompile(`mqtt broker listening.*addr=(\S+)`)

// safeBuffer is a bytes.Buffer safe for a writer and a reader at once.
type safeBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *safeBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *safeBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// loggedAddr waits for the daemon to log the line re matches and returns
// the address it captures.
func loggedAddr(t *testing.T, logs *safeBuffer, re *regexp.Regexp) string {
	t.Helper()
	var addr string
	testutil.Eventually(t, 20*time.Second, func() bool {
		m := re.FindStringSubmatch(logs.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	}, "no line matching %s in the log:\n%s", re, logs)
	return addr
}

// A daemon under a flood of sockets that never speak MQTT still stops at
// once on SIGTERM and says so; it keeps the simulated radio's state apart
// from a real radio's and warns about a secret file others can read.
func TestShutdownUnderSocketFlood(t *testing.T) {
	state := t.TempDir()
	users := filepath.Join(t.TempDir(), "mqtt-users.yaml")
	if err := os.WriteFile(users, []byte("users:\n  ha:\n    password: a-long-password\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "--device", "sim", "--mqtt-listen", "127.0.0.1:0", "--mqtt-credentials", users, "--state-dir", state)
	logs := &safeBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	addr := loggedAddr(t, logs, listenRE)
	conns := make([]net.Conn, 0, 2000)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 2000 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		conns = append(conns, c)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, logs)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("still running 5 s after SIGTERM with 2,000 silent sockets open\n%s", logs)
	}
	log := logs.String()
	for _, want := range []string{"msg=stopping", "secret file is readable by other users", "flag=--mqtt-credentials"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	for _, bad := range []string{`msg=""`, "use of closed network connection", "a-long-password"} {
		if strings.Contains(log, bad) {
			t.Errorf("log has %q:\n%s", bad, log)
		}
	}
	if _, err := os.Stat(filepath.Join(state, "sim", "spool.db")); err != nil {
		t.Errorf("the simulated radio's spool is not in its own state: %v", err)
	}
	if _, err := os.Stat(filepath.Join(state, "spool.db")); err == nil {
		t.Error("the simulated radio used the real radio's spool")
	}
}
