package benchkit

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of the CPU times in /proc: USER_HZ, which Linux keeps
// at 100 for user space on the architectures Go supports.
const userHZ = 100

func ticks(n int64) time.Duration { return time.Duration(n) * time.Second / userHZ }

// CPUTime is the user plus system CPU time a process (all its threads) has
// used so far, from /proc/PID/stat; 0 for pid means this process.
func CPUTime(pid int) (time.Duration, error) {
	path := "/proc/self/stat"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/stat", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses; the
	// fields after its closing parenthesis start with field 3.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("%s: no command name", path)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("%s: %d fields", path, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return ticks(utime + stime), nil
}

// MachineCPU is the CPU time of the whole machine so far, summed over all
// CPUs, from /proc/stat: busy (user, nice, system, irq, softirq, steal) and
// the total including idle and iowait.
func MachineCPU() (busy, total time.Duration, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	first, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(first)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, errors.New("/proc/stat: no cpu line")
	}
	var v [8]int64 // user nice system idle iowait irq softirq steal
	for i := range v {
		if v[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
			return 0, 0, fmt.Errorf("/proc/stat: %w", err)
		}
	}
	b2 := v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
	return ticks(b2), ticks(b2 + v[3] + v[4]), nil
}

// CPUMeter measures, between Start and Stop, the CPU time of some
// processes and how busy the machine was.
type CPUMeter struct {
	pids             []int
	start            []time.Duration
	busy0, total0    time.Duration
	Used             []time.Duration // per pid, after Stop
	MachineBusyShare float64         // busy / total over all CPUs, after Stop
}

// NewCPUMeter measures the given processes (0 is this one).
func NewCPUMeter(pids ...int) *CPUMeter { return &CPUMeter{pids: pids} }

// Start takes the first reading.
func (m *CPUMeter) Start() error {
	m.start = m.start[:0]
	for _, p := range m.pids {
		t, err := CPUTime(p)
		if err != nil {
			return err
		}
		m.start = append(m.start, t)
	}
	var err error
	m.busy0, m.total0, err = MachineCPU()
	return err
}

// Stop takes the second reading and fills Used and MachineBusyShare.
func (m *CPUMeter) Stop() error {
	m.Used = m.Used[:0]
	for i, p := range m.pids {
		t, err := CPUTime(p)
		if err != nil {
			return err
		}
		m.Used = append(m.Used, t-m.start[i])
	}
	busy, total, err := MachineCPU()
	if err != nil {
		return err
	}
	if total > m.total0 {
		m.MachineBusyShare = float64(busy-m.busy0) / float64(total-m.total0)
	}
	return nil
}
