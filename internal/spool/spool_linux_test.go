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

// TestFullDiskTmpfs runs the store on a 1 MiB tmpfs, fills the tmpfs, and
// checks that Push returns ENOSPC without changing anything, that reads
// work, and that Push works again once space is freed. It needs root (or
// CAP_SYS_ADMIN); without it TestInjectedWriteError and TestFileSizeLimit
// still cover failing writes.
func TestFullDiskTmpfs(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount a tmpfs (%v); TestInjectedWriteError and TestFileSizeLimit cover write errors", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	path := filepath.Join(dir, "spool.db")
	s := openStore(t, path, Options{})
	for i := range 5 {
		push(t, s, "q", "before", fmt.Sprint("before-", i))
	}

	// Take all the space that is left.
	filler, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 16<<10)
	for {
		if _, err := filler.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	filler.Close()

	ok, err := fillUntilFull(s)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("push on a full disk: %v, want ENOSPC", err)
	}
	t.Logf("after %d pushes: %v", ok, err)
	n, _, _, err := s.Stats("q")
	if err != nil || n != 5+ok {
		t.Fatalf("Stats on a full disk = %d, %v; want %d", n, err, 5+ok)
	}
	if seen, err := s.Seen(fmt.Sprint("fill-", ok)); err != nil || seen {
		t.Fatalf("key of the failed push: seen %v, %v", seen, err)
	}
	if _, err := s.Peek("q", 0); err != nil {
		t.Fatalf("Peek on a full disk: %v", err)
	}
	check(t, s)

	if err := os.Remove(filepath.Join(dir, "filler")); err != nil {
		t.Fatal(err)
	}
	push(t, s, "q", "after", fmt.Sprint("fill-", ok))
	s.Close()
	s = openStore(t, path, Options{})
	check(t, s)
	if n, _, _, err := s.Stats("q"); err != nil || n != 5+ok+1 {
		t.Fatalf("Stats after reopen = %d, %v; want %d", n, err, 5+ok+1)
	}
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
