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
// the test with msg. It polls; it never sleeps for a fixed wait.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: "+msg, append([]any{timeout}, args...)...)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// NeedCommand skips the test when a command is missing, unless running in CI,
// where a missing tool is a broken setup and fails the test.
func NeedCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if isCI() {
			t.Fatalf("%s not installed (CI must install it)", name)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

func isCI() bool { return os.Getenv("CI") != "" }

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
