// Package benchkit holds what SovereignRelay's benchmarks share: latency
// percentiles, child processes whose output lines are timestamped, the
// daemon's memory and processes' CPU time read from /proc, and the
// description of the machine that is printed next to the figures.
//
// It is used by the bench command (internal/bench: MQTT figures) and by the
// XMPP figures in xmppgw/bench_test.go and internal/bench/xmpp_test.go,
// which are tests because the Prosody harness (internal/xmpptest) needs a
// testing.TB.
package benchkit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// --- latency ---

// Latency summarises the delays of one series of messages.
type Latency struct {
	P50, P99, Max time.Duration
	Got           int // messages that arrived
}

// Summarize pairs sent[i] with recv[i] (a zero time on either side means
// message i is missing) and returns nearest-rank percentiles.
func Summarize(sent, recv []time.Time) Latency {
	var ds []time.Duration
	for i := range min(len(sent), len(recv)) {
		if !sent[i].IsZero() && !recv[i].IsZero() {
			ds = append(ds, recv[i].Sub(sent[i]))
		}
	}
	if len(ds) == 0 {
		return Latency{}
	}
	slices.Sort(ds)
	rank := func(q float64) time.Duration { // nearest rank
		i := int(q*float64(len(ds))+0.999999) - 1
		return ds[max(0, min(i, len(ds)-1))]
	}
	return Latency{P50: rank(0.50), P99: rank(0.99), Max: ds[len(ds)-1], Got: len(ds)}
}

// Token marks message i in a payload, so what arrives can be matched.
func Token(i int) string { return fmt.Sprintf("probe-%06d", i) }

// TokenIndex finds the first Token in s.
func TokenIndex(s string) (int, bool) {
	_, rest, ok := strings.Cut(s, "probe-")
	if !ok || len(rest) < 6 {
		return 0, false
	}
	i, err := strconv.Atoi(rest[:6])
	return i, err == nil
}

// --- processes ---

// Proc is a child process whose output lines (stdout and stderr) go to a
// callback and are kept, the last few, for error messages.
type Proc struct {
	Cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and its output is read

	mu   sync.Mutex
	tail []string
}

// StartProc starts name with args; onLine (may be nil) gets every output
// line with the time it was read.
func StartProc(name string, args []string, onLine func(time.Time, string)) (*Proc, error) {
	return StartCmd(exec.Command(name, args...), onLine)
}

// StartCmd is StartProc for a prepared command (environment, directory).
// It sets the command's Stdout and Stderr.
func StartCmd(cmd *exec.Cmd, onLine func(time.Time, string)) (*Proc, error) {
	p := &Proc{Cmd: cmd, done: make(chan struct{})}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	p.Cmd.Stdout, p.Cmd.Stderr = pw, pw
	if err := p.Cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	pw.Close()
	go func() {
		defer close(p.done)
		p.read(pr, onLine)
		pr.Close()
		_ = p.Cmd.Wait()
	}()
	return p, nil
}

func (p *Proc) read(r io.Reader, onLine func(time.Time, string)) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		at := time.Now()
		if onLine != nil {
			onLine(at, sc.Text())
		}
		p.mu.Lock()
		p.tail = append(p.tail, sc.Text())
		if len(p.tail) > 20 {
			p.tail = p.tail[1:]
		}
		p.mu.Unlock()
	}
}

// Done is closed once the process has exited and its output is read.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether Done is closed.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Output returns the last lines the process printed.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.tail, "\n")
}

// Stop sends SIGTERM, and SIGKILL if the process is still there after
// timeout, and waits until it is gone.
func (p *Proc) Stop(timeout time.Duration) {
	if p.Exited() {
		return
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.Cmd.Process.Kill()
		<-p.done
	}
}

// --- the daemon's memory ---

// RSS is what sampling /proc/PID/status found.
type RSS struct {
	MaxRSS, FinalRSS, HWM int64 // bytes; HWM is the kernel's peak, from the last sample
	Samples               int
}

// BuildDaemon builds ./cmd/sovereign-bridge of the module the current
// directory is in and returns the executable's path, in dir.
func BuildDaemon(dir string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	exe := filepath.Join(dir, "sovereign-bridge")
	build := exec.Command("go", "build", "-o", exe, "./cmd/sovereign-bridge")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return exe, nil
}

// MeasureRSS starts cmd, waits (at most timeout) until it prints a line
// containing ready, then samples its VmRSS and VmHWM every sample for
// duration, and stops it. The process must stay up throughout.
func MeasureRSS(cmd *exec.Cmd, ready string, timeout, duration, sample time.Duration) (RSS, error) {
	readyCh := make(chan struct{})
	var once sync.Once
	d, err := StartCmd(cmd, func(_ time.Time, line string) {
		if strings.Contains(line, ready) {
			once.Do(func() { close(readyCh) })
		}
	})
	if err != nil {
		return RSS{}, err
	}
	defer d.Stop(timeout)
	select {
	case <-readyCh:
	case <-d.Done():
		return RSS{}, fmt.Errorf("daemon exited: %s", d.Output())
	case <-time.After(timeout):
		return RSS{}, fmt.Errorf("daemon did not log %q within %v: %s", ready, timeout, d.Output())
	}

	var res RSS
	take := func() error {
		rss, hwm, err := ProcStatus(d.Cmd.Process.Pid)
		if err != nil {
			return err
		}
		res.Samples++
		res.MaxRSS = max(res.MaxRSS, rss)
		res.FinalRSS, res.HWM = rss, hwm
		return nil
	}
	end := time.After(duration)
	tick := time.NewTicker(sample)
	defer tick.Stop()
	for {
		if err := take(); err != nil {
			return RSS{}, fmt.Errorf("sampling the daemon: %v; output: %s", err, d.Output())
		}
		select {
		case <-end:
			if err := take(); err != nil {
				return RSS{}, fmt.Errorf("sampling the daemon: %v; output: %s", err, d.Output())
			}
			if d.Exited() {
				return RSS{}, fmt.Errorf("daemon exited during the run: %s", d.Output())
			}
			return res, nil
		case <-d.Done():
			return RSS{}, fmt.Errorf("daemon exited during the run: %s", d.Output())
		case <-tick.C:
		}
	}
}

// ProcStatus reads VmRSS and VmHWM (in bytes) of a process.
func ProcStatus(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for l := range strings.Lines(string(b)) {
		f := strings.Fields(l)
		if len(f) != 3 || f[2] != "kB" {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v * 1024
		case "VmHWM:":
			hwm = v * 1024
		}
	}
	if rss == 0 {
		return 0, 0, errors.New("no VmRSS in /proc status")
	}
	return rss, hwm, nil
}

// ModuleRoot is the directory of the go.mod the current directory is in.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the module: run from the repository root")
	}
	return filepath.Dir(gomod), nil
}

// --- waiting ---

// WaitUntil waits until cond holds, re-checking whenever changed (if set)
// fires and at least every 10 ms, for at most timeout.
func WaitUntil(timeout time.Duration, changed func() <-chan struct{}, cond func() bool) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	for {
		var ch <-chan struct{}
		if changed != nil {
			ch = changed()
		}
		if cond() {
			return nil
		}
		select {
		case <-ch:
		case <-poll.C:
		case <-deadline.C:
			return fmt.Errorf("not within %v", timeout)
		}
	}
}

// --- what is printed with the figures ---

// Machine describes the machine: CPUs and their model, OS, architecture,
// kernel and GOMAXPROCS.
func Machine() string {
	kernel := "?"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%d CPUs (%s), %s/%s, kernel %s, GOMAXPROCS %d",
		runtime.NumCPU(), CPUModel(), runtime.GOOS, runtime.GOARCH, kernel, runtime.GOMAXPROCS(0))
}

// CPUModel is the first "model name" in /proc/cpuinfo.
func CPUModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "?"
	}
	for l := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

// ShellQuote quotes s for a POSIX shell, if it needs it.
func ShellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r == '-' || r == '=' || r == '.' || r == '/' || r == ':' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Ms formats a duration in milliseconds.
func Ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond)) }

// MiB formats a byte count in MiB.
func MiB(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// Ratio is a/b, or 0 when b is 0.
func Ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// TestCommand renders the go test command line that ran this test binary,
// for pkg (e.g. "./xmppgw/"), leaving out the flags go test adds itself.
func TestCommand(pkg string) string {
	cmd := "go test " + pkg
	for _, a := range os.Args[1:] {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name == "test.paniconexit0" || name == "test.testlogfile" || name == "test.gocoverdir" || a == "-test.timeout=10m0s" {
			continue // added by go test
		}
		if v, ok := strings.CutPrefix(a, "-test."); ok {
			a = "-" + strings.TrimSuffix(v, "=true")
		}
		cmd += " " + ShellQuote(a)
	}
	return cmd
}

// ProsodyVersion is the "Prosody X.Y.Z" line of `prosodyctl about`, or "?".
// Warnings (a missing optional Lua library) may come before it.
func ProsodyVersion() string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "prosodyctl", "about").Output()
	if err != nil {
		return "?"
	}
	for l := range strings.Lines(string(out)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "Prosody "); ok && v != "" && v[0] >= '0' && v[0] <= '9' {
			return "Prosody " + v
		}
	}
	return "?"
}
