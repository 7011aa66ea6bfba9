package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
