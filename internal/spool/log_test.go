package spool

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"testing"
)

// Drops are reported on the logger the caller gives, in its format; with
// no logger they are not reported anywhere.
func TestDropsLogged(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	s := openStore(t, filepath.Join(t.TempDir(), "spool.db"), Options{NoSync: true, MaxItems: 1, Logger: log})
	push(t, s, "q", "a", "")
	push(t, s, "q", "b", "")
	var rec struct {
		Level, Msg, Queue, Reason string
		Items                     int
	}
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("log %q: %v", buf.String(), err)
	}
	if rec.Level != "WARN" || rec.Queue != "q" || rec.Items != 1 || rec.Reason != ReasonMaxItems {
		t.Errorf("drop logged as %+v", rec)
	}

	quiet := openStore(t, filepath.Join(t.TempDir(), "spool.db"), Options{NoSync: true, MaxItems: 1})
	push(t, quiet, "q", "a", "")
	push(t, quiet, "q", "b", "")
}
