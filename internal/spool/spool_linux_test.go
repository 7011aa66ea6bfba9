package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func init() {
	helpers["fsize"] = func() error { return fsizeHelper(os.Getenv("SPOOL_TEST_DB")) }
}

// fillUntilFull pushes 4 KiB items to queue "q" until a push fails, and
// returns that error and how many pushes succeeded.
func fillUntilFull(s *Store) (int, error) {
	data := make([]byte, 4096)
	for i := range 1000 {
		if _, _, err := s.Push("q", data, fmt.Sprint("fill-", i)); err != nil {
			return i, err
		}
	}
	return 1000, errors.New("1000 pushes of 4 KiB did not fail")
}

// fsizeHelper lowers RLIMIT_FSIZE to the spool file's size, so the file
// cannot grow (a disk full for this file, without mount), fills the store
// until Push fails, checks the store, then raises the limit and checks that
// Push works again. It runs in a child process because the limit applies to
// the whole process.
func fsizeHelper(path string) error {
	s, err := Open(path, Options{})
	if err != nil {
		return err
	}
	defer s.Close()
	if _, _, err := s.Push("q", []byte("before"), "before"); err != nil {
		return err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		return err
	}
	lim := old
	lim.Cur = uint64(fi.Size())
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		return err
	}
	ok, err := fillUntilFull(s)
	if err == nil || !strings.Contains(err.Error(), "file too large") {
		return fmt.Errorf("push beyond RLIMIT_FSIZE: %v, want EFBIG", err)
	}
	fmt.Printf("after %d pushes: %v\n", ok, err)
	if n, _, _, err := s.Stats("q"); err != nil || n != 1+ok {
		return fmt.Errorf("stats at the limit = %d, %v; want %d", n, err, 1+ok)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		return err
	}
	if _, _, err := s.Push("q", make([]byte, 4096), "after"); err != nil {
		return fmt.Errorf("push after raising the limit: %v", err)
	}
	if n, _, _, err := s.Stats("q"); err != nil || n != 2+ok {
		return fmt.Errorf("stats after raising the limit = %d, %v; want %d", n, err, 2+ok)
	}
	return nil
}

// TestFileSizeLimit makes the spool file unable to grow with RLIMIT_FSIZE in
// a child process: a real write error from the OS through bbolt, which needs
// no privileges (see fsizeHelper).
func TestFileSizeLimit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool.db")
	out, err := helper(t, "fsize", "SPOOL_TEST_DB="+path).CombinedOutput()
	t.Logf("helper: %s", out)
	if err != nil {
		t.Fatalf("helper: %v", err)
	}
	s := openStore(t, path, Options{})
	check(t, s)
}
