// Package testutil holds helpers shared by the integration tests: waiting on
// conditions with a deadline and driving real mosquitto client processes.
package testutil

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// Eventually polls cond until it is true or the timeout passes, then fails
// the test with msg. It is the one polling loop of the tests: it waits on a
// condition, never for a fixed time.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	if !Poll(context.Background(), timeout, cond) {
		t.Fatalf("condition not met within %v: "+msg, append([]any{timeout}, args...)...)
	}
}

// Poll reports whether cond became true before the timeout passed or ctx
// ended, checking it every few milliseconds.
func Poll(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return cond()
		case <-tick.C:
		}
	}
	return true
}

// debianPackage names the Debian package that provides each program the
// integration tests run.
var debianPackage = map[string]string{
	"mosquitto":        "mosquitto",
	"mosquitto_passwd": "mosquitto",
	"mosquitto_sub":    "mosquitto-clients",
	"mosquitto_pub":    "mosquitto-clients",
	"prosody":          "prosody",
	"prosodyctl":       "prosody",
	"ejabberdctl":      "ejabberd",
	"erl":              "ejabberd",
	"protoc":           "protobuf-compiler",
	"node":             "nodejs",
}

// NeedCommand returns the path of a program the test runs. A missing
// program fails the test, naming the package to install: a test that
// skips for a missing tool would report success while testing nothing.
func NeedCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		for _, dir := range []string{"/usr/sbin", "/sbin"} { // not on every user's PATH
			if p, err = exec.LookPath(dir + "/" + name); err == nil {
				return p
			}
		}
		t.Fatalf("%s is not installed: %s", name, installHint(name))
	}
	return p
}

func installHint(name string) string {
	pkg, ok := debianPackage[name]
	if !ok {
		pkg = name
	}
	return "install the Debian package " + pkg + " (bash .ci/test installs everything the tests need)"
}

// NeedRoot fails the test unless it runs as root, saying why it needs it.
func NeedRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("this test needs root: %s (CI runs as root)", why)
	}
}

// Lines collects the output lines of a running process.
type Lines struct {
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

func collect(r io.Reader) *Lines {
	l := &Lines{done: make(chan struct{})}
	go func() {
		defer close(l.done)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			l.mu.Lock()
			l.lines = append(l.lines, sc.Text())
			l.mu.Unlock()
		}
	}()
	return l
}

// All returns the lines so far.
func (l *Lines) All() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// WaitFor waits until a line satisfies match and returns it.
func (l *Lines) WaitFor(t testing.TB, timeout time.Duration, match func(string) bool) string {
	t.Helper()
	var found string
	Eventually(t, timeout, func() bool {
		for _, s := range l.All() {
			if match(s) {
				found = s
				return true
			}
		}
		return false
	}, "no matching line; got %q", l.All())
	return found
}

// Contains is a match function for WaitFor.
func Contains(sub string) func(string) bool {
	return func(s string) bool { return strings.Contains(s, sub) }
}

// Start runs a command for the life of the test and collects its stdout
// (and stderr, merged) as lines.
func Start(t testing.TB, name string, args ...string) *Lines {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, name, args...)
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", name, err)
	}
	lines := collect(pr)
	waited := make(chan struct{})
	go func() { _ = cmd.Wait(); pw.Close(); close(waited) }()
	t.Cleanup(func() {
		cancel()
		<-waited
		<-lines.done
	})
	return lines
}
