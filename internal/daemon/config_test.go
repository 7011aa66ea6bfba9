package daemon

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParseDefaults(t *testing.T) {
	c, err := Parse(nil, env(map[string]string{"HOME": "/home/op"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Device != "auto" || c.MQTTListen != "127.0.0.1:1883" || !c.MQTTEncrypt || c.TextInterval != 2500*time.Millisecond ||
		c.LogLevel != "info" || c.LogFormat != "text" || c.StateDir != "/home/op/.local/state/sovereign-bridge" {
		t.Errorf("defaults = %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}

func TestStateDir(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"STATE_DIRECTORY": "/var/lib/sovereign-bridge", "HOME": "/h"}, "/var/lib/sovereign-bridge"},
		{map[string]string{"STATE_DIRECTORY": "/var/lib/a:/var/lib/b"}, "/var/lib/a"},
		{map[string]string{"XDG_STATE_HOME": "/x", "HOME": "/h"}, "/x/sovereign-bridge"},
	}
	for _, tt := range tests {
		c, _ := Parse(nil, env(tt.env), io.Discard)
		if c.StateDir != tt.want {
			t.Errorf("env %v: state dir %q, want %q", tt.env, c.StateDir, tt.want)
		}
	}
	c, _ := Parse([]string{"--state-dir", "/explicit"}, env(map[string]string{"STATE_DIRECTORY": "/s"}), io.Discard)
	if c.StateDir != "/explicit" {
		t.Errorf("flag did not win: %q", c.StateDir)
	}
}

// Short and long XMPP flags are the same settings, as the original README uses them.
func TestShortAndLongFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-j", "bot@example.org", "-p", "pw", "-r", "room@conference.example.org", "-n", "meshbridge"},
		{"--jid", "bot@example.org", "--password", "pw", "--room", "room@conference.example.org", "--nick", "meshbridge"},
	} {
		c, err := Parse(args, env(nil), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if c.JID != "bot@example.org" || c.Password.Reveal() != "pw" || c.Room != "room@conference.example.org" || c.Nick != "meshbridge" {
			t.Errorf("%v parsed to %+v", args, c)
		}
	}
}

func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o600)
		return p
	}
	good := write("good.toml", "device = \"tcp://radio.lan\"\nmqtt-encrypt = false\ntext-interval = \"3s\"\nlog-level = \"debug\"\n")
	c, err := Parse([]string{"--config", good, "--log-level", "warn"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Device != "tcp://radio.lan" || c.MQTTEncrypt || c.TextInterval != 3*time.Second || c.LogLevel != "warn" {
		t.Errorf("config file applied wrongly: %+v", c)
	}
	for name, body := range map[string]string{
		"unknown.toml": "colour = \"blue\"\n",
		"short.toml":   "j = \"bot@example.org\"\n",
		"table.toml":   "[device]\npath = \"x\"\n",
		"syntax.toml":  "device = \n",
		"badval.toml":  "text-interval = \"soon\"\n",
	} {
		_, err := Parse([]string{"--config", write(name, body)}, env(nil), io.Discard)
		if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: err = %v, want a usage error naming the file", name, err)
		}
	}
}

func TestSecretNeverPrints(t *testing.T) {
	c, _ := Parse([]string{"-p", "hunter2"}, env(nil), io.Discard)
	var sb strings.Builder
	log := slog.New(slog.NewTextHandler(&sb, nil))
	log.Info("config", "password", c.Password, "cfg", c)
	slog.New(slog.NewJSONHandler(&sb, nil)).Info("config", "password", c.Password, "cfg", c)
	for _, s := range []string{sb.String(), fmt.Sprintf("%v %+v %#v %s", c, c, c, c.Password)} {
		if strings.Contains(s, "hunter2") {
			t.Errorf("password printed: %s", s)
		}
	}
}

// The NixOS module builds this command line (nixos/testdata/module-argv.txt,
// kept in step with nixos/module.nix); the daemon must accept it as is.
func TestModuleCommandLine(t *testing.T) {
	b, err := os.ReadFile("../../nixos/testdata/module-argv.txt")
	if err != nil {
		t.Fatal(err)
	}
	creds := t.TempDir()
	os.WriteFile(filepath.Join(creds, "xmpp-password"), []byte("s3cret\n"), 0o600)
	var args []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		args = append(args, strings.ReplaceAll(line, "%CREDENTIALS_DIRECTORY%", creds))
	}
	c, err := Parse(args, env(map[string]string{"STATE_DIRECTORY": "/var/lib/sovereign-bridge"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("module command line refused: %v", err)
	}
	xc, err := c.xmppConfig(os.ReadFile)
	if err != nil {
		t.Fatal(err)
	}
	if xc.Password != "s3cret" || xc.JID.String() != "your_jid@xmpp.org" || len(xc.Rooms) != 1 || xc.Rooms[0].Nick != "meshbridge" {
		t.Errorf("module command line parsed to %+v (password %q)", xc.Rooms, xc.Password)
	}
}

// More rooms come from [[rooms]] tables; the flags give the primary one.
func TestRoomsFromFile(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	file := filepath.Join(dir, "bridge.toml")
	os.WriteFile(file, []byte(`jid = "bridge@example.org"
password-file = "`+pw+`"
room = "village@conference.example.org"
nick = "meshbridge"

[[rooms]]
jid = "farm@conference.example.org"
channel = "farm"
nick = "farmbot"

[[rooms]]
jid = "ops@conference.example.org"
channel-index = 2
`), 0o600)
	c, err := Parse([]string{"--config", file}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	xc, err := c.xmppConfig(os.ReadFile)
	if err != nil {
		t.Fatal(err)
	}
	want := "village@conference.example.org meshbridge primary|farm@conference.example.org farmbot farm|ops@conference.example.org meshbridge #2"
	var got []string
	for _, r := range xc.Rooms {
		label := r.Channel
		if r.ByIndex {
			label = fmt.Sprintf("#%d", r.Index)
		} else if label == "" {
			label = "primary"
		}
		got = append(got, r.JID.String()+" "+r.Nick+" "+label)
	}
	if strings.Join(got, "|") != want {
		t.Errorf("rooms = %q\nwant    %q", strings.Join(got, "|"), want)
	}
	for name, body := range map[string]string{
		"bad-key.toml":   "[[rooms]]\njid = \"a@b.c\"\ncolour = \"x\"\n",
		"bad-index.toml": "jid = \"bridge@example.org\"\npassword = \"x\"\nnick = \"n\"\n[[rooms]]\njid = \"a@b.c\"\nchannel-index = 9\n",
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o600)
		c, err := Parse([]string{"--config", p}, env(nil), io.Discard)
		if err == nil {
			err = c.Validate()
		}
		if !errors.Is(err, ErrUsage) {
			t.Errorf("%s: err = %v, want a usage error", name, err)
		}
	}
}

// A mesh name is plain text of at most 64 bytes that could name a topic
// level; anything else is a usage error naming the flag.
func TestMeshName(t *testing.T) {
	for _, name := range []string{"", "valley", "Valley North", "vallée-2", strings.Repeat("é", 32)} {
		c, err := Parse([]string{"--mesh", name}, env(nil), io.Discard)
		if err == nil {
			err = c.Validate()
		}
		if err != nil || c.Mesh != name {
			t.Errorf("--mesh %q: %v (parsed %q)", name, err, c.Mesh)
		}
	}
	for _, name := range []string{"a/b", "a+b", "a#", "a\nb", "tab\there", "\xff", strings.Repeat("m", 65)} {
		c, err := Parse([]string{"--mesh", name}, env(nil), io.Discard)
		if err == nil {
			err = c.Validate()
		}
		if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "--mesh") || strings.Contains(err.Error(), "\n") {
			t.Errorf("--mesh %q: err = %v, want a one-line usage error naming --mesh", name, err)
		}
	}
}

// The map report is off by default at the firmware's 14 bits; the
// precision is refused outside the firmware's 12 to 15 with one line
// naming the flag, from the command line and the config file alike.
func TestMapReportFlags(t *testing.T) {
	c, err := Parse(nil, env(nil), io.Discard)
	if err != nil || c.MapReport || c.MapReportPrecision != 14 {
		t.Fatalf("defaults: map report %v at %d bits (%v)", c.MapReport, c.MapReportPrecision, err)
	}
	for _, bits := range []string{"12", "13", "14", "15"} {
		c, err := Parse([]string{"--map-report", "--map-report-precision", bits}, env(nil), io.Discard)
		if err == nil {
			err = c.Validate()
		}
		if err != nil || !c.MapReport || fmt.Sprint(c.MapReportPrecision) != bits {
			t.Errorf("--map-report-precision %s: %v (parsed %d)", bits, err, c.MapReportPrecision)
		}
	}
	for _, bits := range []string{"0", "10", "11", "16", "19", "32", "4294967296", "-1", "fine"} {
		c, err := Parse([]string{"--map-report-precision", bits}, env(nil), io.Discard)
		if err == nil {
			err = c.Validate()
		}
		if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "map-report-precision") || strings.Contains(err.Error(), "\n") {
			t.Errorf("--map-report-precision %s: err = %v, want a one-line usage error naming the flag", bits, err)
		}
	}
	file := filepath.Join(t.TempDir(), "bridge.toml")
	os.WriteFile(file, []byte("map-report = true\nmap-report-precision = 12\n"), 0o600)
	if c, err := Parse([]string{"--config", file}, env(nil), io.Discard); err != nil || !c.MapReport || c.MapReportPrecision != 12 {
		t.Errorf("config file: map report %v at %d bits (%v)", c.MapReport, c.MapReportPrecision, err)
	}
	os.WriteFile(file, []byte("map-report-precision = 18\n"), 0o600)
	c, err = Parse([]string{"--config", file}, env(nil), io.Discard)
	if err == nil {
		err = c.Validate()
	}
	if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "map-report-precision") {
		t.Errorf("config file with 18 bits: err = %v, want a usage error", err)
	}
}

// What crosses an external broker at QoS 1: the bridge's own topics but
// Home Assistant's node states (latest wins), and the discovery configs
// (whose removal must not be lost) only with --hass.
func TestReliableTopics(t *testing.T) {
	c := Config{Hass: true, HassPrefix: "ha"}
	for topic, want := range map[string]bool{
		"sovereign/mesh/rx":                            true,
		"sovereign/bridge/status/!5eed0001":            true,
		"sovereign/hass/node/!a1b2c3d4/state":          false,
		"ha/sensor/sovereign_a1b2c3d4/battery/config":  true,
		"homeassistant/sensor/sovereign_a1/bat/config": false,
		"msh/EU_868/2/json/LongFast/!5eed0001":         false,
	} {
		if got := c.reliable(topic); got != want {
			t.Errorf("reliable(%q) = %v, want %v", topic, got, want)
		}
	}
	c.Hass = false
	if c.reliable("ha/sensor/sovereign_a1b2c3d4/battery/config") {
		t.Error("a discovery config is reliable without --hass")
	}
}
