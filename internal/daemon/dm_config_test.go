package daemon

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// --dm-allow takes comma-separated accounts to the XMPP gateway; anything
// else ends the daemon with one line naming the flag (exit status 78).
func TestDMAllow(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	base := []string{"-j", "bridge@example.org", "--password-file", pw, "-r", "village@conference.example.org", "-n", "meshbridge"}
	c, err := Parse(append(base, "--dm-allow", " alice@example.org, bob@example.net ,"), env(nil), io.Discard)
	if err == nil {
		err = c.Validate()
	}
	if err != nil {
		t.Fatal(err)
	}
	xc, err := c.xmppConfig(os.ReadFile)
	if err != nil || len(xc.DMAllow) != 2 || xc.DMAllow[0].String() != "alice@example.org" || xc.DMAllow[1].String() != "bob@example.net" {
		t.Errorf("DMAllow = %v (%v)", xc.DMAllow, err)
	}
	for _, bad := range []string{"example.org", "alice@example.org/phone", "alice@@example.org", "alice@example.org,@x"} {
		c, err := Parse(append(base, "--dm-allow", bad), env(nil), io.Discard)
		if err == nil {
			err = c.Validate()
		}
		if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "--dm-allow") || strings.Contains(err.Error(), "\n") {
			t.Errorf("--dm-allow %q: err = %v, want a one-line usage error naming the flag", bad, err)
		}
	}
	c, err = Parse([]string{"--dm-allow", "alice@example.org"}, env(nil), io.Discard)
	if err == nil {
		err = c.Validate()
	}
	if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "without -j/--jid") {
		t.Errorf("--dm-allow without a JID: err = %v, want a usage error", err)
	}
}
