//go:build integration

package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/jshiffer/lora-xmpp-bridge/internal/testutil"
)

// TestFullDiskTmpfs runs the store on a 1 MiB tmpfs, fills the tmpfs, and
// checks that Push returns ENOSPC without changing anything, that reads
// work, and that Push works again once space is freed. It needs root.
func TestFullDiskTmpfs(t *testing.T) {
	dir := testutil.MountTmpfs(t, "1m")
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
