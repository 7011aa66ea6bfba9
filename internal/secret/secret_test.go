package secret

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// config is how a secret usually travels: a field of a larger struct.
type config struct {
	User     string
	Password String
	Nested   struct{ Token String }
	Ptr      *String
}

func TestNeverShown(t *testing.T) {
	const pw = "hunter2"
	s := String(pw)
	c := config{User: "bridge", Password: s, Ptr: &s}
	c.Nested.Token = s

	var out []string
	for _, f := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d", "%10v"} {
		out = append(out, fmt.Sprintf(f, s), fmt.Sprintf(f, c), fmt.Sprintf(f, &c))
	}
	out = append(out, fmt.Sprint(s, c), fmt.Sprintln(s, c), fmt.Errorf("login as %v: %w", c, errors.New("refused")).Error())

	var logs strings.Builder
	for _, log := range []*slog.Logger{slog.New(slog.NewTextHandler(&logs, nil)), slog.New(slog.NewJSONHandler(&logs, nil))} {
		log.Info("config", "password", s, "cfg", c, "ptr", &c, slog.Group("g", "password", s))
	}
	out = append(out, logs.String())

	for _, v := range []any{s, c, &c, map[string]String{"password": s}, []String{s}} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}

	for _, o := range out {
		if strings.Contains(o, pw) {
			t.Errorf("secret shown: %s", o)
		}
	}
	if !strings.Contains(logs.String(), redacted) {
		t.Errorf("logs do not say the value was redacted: %s", logs.String())
	}
}

func TestRevealAndSet(t *testing.T) {
	var s String
	if err := s.Set("hunter2"); err != nil {
		t.Fatal(err)
	}
	if s.Reveal() != "hunter2" || s.String() != redacted {
		t.Errorf("Reveal %q, String %q", s.Reveal(), s.String())
	}
}
