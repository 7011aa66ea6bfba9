package testutil

import (
	"syscall"
	"testing"
)

// MountTmpfs mounts a tmpfs of the given size ("512k", "1m") on a fresh
// temporary directory for the life of the test, so the test can fill a
// disk for real. Mounting needs root; without it the test fails and says so.
func MountTmpfs(t testing.TB, size string) string {
	t.Helper()
	NeedRoot(t, "it mounts a small tmpfs to fill a disk")
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Fatalf("mount a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}
