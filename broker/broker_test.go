package broker

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func quietLog() *slog.Logger {
	if os.Getenv("TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func startEmbedded(t *testing.T, cfg Config) *Embedded {
	t.Helper()
	e, err := NewEmbedded(cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func TestValidate(t *testing.T) {
	tests := []struct {
		cfg     Config
		wantErr string
	}{
		{Config{Listen: "127.0.0.1:1883"}, ""},
		{Config{Listen: "[::1]:1883"}, ""},
		{Config{Listen: "localhost:1883"}, ""},
		{Config{Listen: Off}, ""},
		{Config{Listen: "0.0.0.0:1883"}, "no credentials file"},
		{Config{Listen: ":1883"}, "no credentials file"},
		{Config{Listen: "192.168.1.5:1883"}, "no credentials file"},
		{Config{Listen: "0.0.0.0:1883", CredentialsFile: "/x"}, ""},
		{Config{Listen: "nonsense"}, "mqtt listen address"},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("Validate(%+v) = %v, want error containing %q", tt.cfg, err, tt.wantErr)
		}
	}
}

func TestEmbeddedCredentialsErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.yaml")
	os.WriteFile(empty, []byte("users: {}\n"), 0o600)
	for name, file := range map[string]string{"missing": filepath.Join(dir, "nope"), "no users": empty} {
		if _, err := NewEmbedded(Config{Listen: "127.0.0.1:0", CredentialsFile: file}, quietLog()); err == nil {
			t.Errorf("%s credentials file accepted", name)
		}
	}
}

// The paho client talks to a real broker: here our embedded one over TCP.
func TestRemote(t *testing.T) {
	e := startEmbedded(t, Config{Listen: "127.0.0.1:0"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := DialRemote(ctx, RemoteConfig{URL: "mqtt://" + e.Addr()}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	got := make(chan string, 1)
	if _, err := r.Subscribe("a/#", func(topic string, p []byte) { got <- topic + "=" + string(p) }); err != nil {
		t.Fatal(err)
	}
	if err := e.Publish("a/b", []byte("x"), false); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "a/b=x" {
			t.Errorf("got %q", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("remote subscriber got nothing")
	}
}

func TestIsPrivate(t *testing.T) {
	for u, want := range map[string]bool{
		"tcp://127.0.0.1:1883": true, "mqtt://localhost": true, "tcp://192.168.1.10": true, "tcp://10.1.2.3:1883": true,
		"tcp://100.64.1.1": true, "tcp://[fd00::1]:1883": true, "tcp://mqtt.meshtastic.org:1883": false, "tcp://8.8.8.8": false,
	} {
		if got := IsPrivate(u); got != want {
			t.Errorf("IsPrivate(%q) = %v, want %v", u, got, want)
		}
	}
}

func TestRemoteURLErrorsHidePassword(t *testing.T) {
	for _, u := range []string{"http://user:hunter2@host", "tcp://user:hunter2@", "tcp://user:hunter2@host:%zz", "mqtt://user:hun/ter2@host", "mqtt://user:hunter2#x@host"} {
		err := RemoteConfig{URL: u}.Validate()
		if err == nil {
			t.Errorf("%q accepted", u)
			continue
		}
		if strings.Contains(err.Error(), "hunter") || strings.Contains(err.Error(), "ter2") {
			t.Errorf("error shows the password: %v", err)
		}
	}
}
