package broker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
)

func TestLoadCredentials(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, content string
		wantErr       string // "" for success
	}{
		{"plain", "users:\n  ha:\n    password: pw\n", ""},
		{"with rules", "users:\n  ha:\n    password: pw\n    read: ['msh/#']\n    write: ['msh/+/2/json/mqtt/#']\n", ""},
		{"json", `{"users": {"nodered": {"password": "pw"}}}`, ""},
		{"empty", "", "empty"},
		{"no users", "users: {}\n", "no users"},
		{"misspelt key", "users:\n  ha:\n    pasword: pw\n", "pasword"},
		{"unknown top-level key", "users:\n  ha:\n    password: pw\nacl: []\n", "acl"},
		{"no password", "users:\n  ha:\n    read: ['#']\n", `user "ha" has no password`},
		{"bad filter", "users:\n  ha:\n    password: pw\n    write: ['msh/#/x']\n", "not a valid MQTT topic filter"},
		{"not yaml", "users: [\n", "not a credentials file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-")+".yaml")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			users, err := LoadCredentials(path)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("LoadCredentials: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("LoadCredentials = %v, want an error mentioning %q", err, tt.wantErr)
			case err == nil && len(users) != 1:
				t.Fatalf("users = %v", users)
			}
			if err != nil && strings.Contains(err.Error(), "pw") && !strings.Contains(err.Error(), "pasword") {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
	if _, err := LoadCredentials(filepath.Join(dir, "missing.yaml")); !os.IsNotExist(err) {
		t.Errorf("missing file: %v", err)
	}
}

func isDownlinkForTest(topic string) bool { return strings.HasSuffix(topic, "/2/json/mqtt/") }

func bridgeTopic(topic string) bool { return strings.HasPrefix(topic, "sovereign/") }

func TestAccessRules(t *testing.T) {
	users := Credentials{
		"ha":     {Password: "pw"},
		"reader": {Password: "pw", Read: []string{"msh/#"}, Write: []string{}},
		"gw":     {Password: "pw", Write: []string{"#"}},
		"bridge": {Password: "pw", Write: []string{"sovereign/mesh/tx"}},
	}
	anon := &accessHook{isDownlink: isDownlinkForTest, isOwn: bridgeTopic}
	withUsers := &accessHook{users: users, isDownlink: isDownlinkForTest, isOwn: bridgeTopic}
	client := func(user string) *mqtt.Client {
		cl := &mqtt.Client{}
		cl.Properties.Username = []byte(user)
		return cl
	}
	tests := []struct {
		hook  *accessHook
		user  string
		topic string
		write bool
		want  bool
	}{
		{anon, "", "sovereign/mesh/rx", false, true},
		{anon, "", "msh/EU_868/2/json/LongFast/!5eed0001", false, true},
		{anon, "", "msh/EU_868/2/json/mqtt/", true, true},
		{anon, "", "msh/EU_868/2/e/LongFast/!5eed0001", true, false},
		{anon, "", "sovereign/mesh/tx", true, false},
		{anon, "", "sovereign/bridge/status", true, false},
		{withUsers, "ha", "sovereign/mesh/nodes/!a1b2c3d4", false, true},
		{withUsers, "ha", "msh/EU_868/2/json/mqtt/", true, true},
		{withUsers, "ha", "sovereign/mesh/rx", true, false},
		{withUsers, "reader", "msh/EU_868/2/e/LongFast/!5eed0001", false, true},
		{withUsers, "reader", "sovereign/mesh/rx", false, false},
		{withUsers, "reader", "#", false, true}, // a filter: deliveries are checked one by one
		{withUsers, "reader", "msh/EU_868/2/json/mqtt/", true, false},
		{withUsers, "gw", "msh/EU_868/2/e/LongFast/!0badcafe", true, true},
		{withUsers, "gw", "sovereign/mesh/tx", true, false}, // "#" does not grant the bridge's topics
		{withUsers, "bridge", "sovereign/mesh/tx", true, true},
		{withUsers, "bridge", "sovereign/mesh/rx", true, false},
		{withUsers, "stranger", "msh/EU_868/2/json/mqtt/", true, true}, // cannot happen: unauthenticated
	}
	for _, tt := range tests {
		if got := tt.hook.OnACLCheck(client(tt.user), tt.topic, tt.write); got != tt.want {
			kind := map[bool]string{false: "read", true: "write"}[tt.write]
			t.Errorf("users=%v user %q %s %s = %v, want %v", tt.hook.users != nil, tt.user, kind, tt.topic, got, tt.want)
		}
	}
}

func TestLoginGuard(t *testing.T) {
	g := newLoginGuard()
	now := time.Unix(1_800_000_000, 0)
	for i := 1; i < freeFailures; i++ {
		if n, d := g.failed("192.0.2.7", now); n != i || d != 0 {
			t.Fatalf("failure %d: count %d, lockout %v", i, n, d)
		}
		if g.locked("192.0.2.7", now) {
			t.Fatalf("locked after %d failures", i)
		}
	}
	if _, d := g.failed("192.0.2.7", now); d != lockoutMin {
		t.Fatalf("lockout after %d failures = %v, want %v", freeFailures, d, lockoutMin)
	}
	if !g.locked("192.0.2.7", now) || g.locked("192.0.2.8", now) {
		t.Fatal("lockout must hold for the failing address only")
	}
	if g.locked("192.0.2.7", now.Add(lockoutMin)) {
		t.Fatal("still locked after the lockout")
	}
	// Each further failure doubles the lockout, up to the cap.
	want := lockoutMin
	for range 20 {
		now = now.Add(time.Hour / 100)
		want = min(want*2, lockoutMax)
		_, _ = g.failed("192.0.2.7", now)
		if !g.locked("192.0.2.7", now.Add(want-time.Millisecond)) || g.locked("192.0.2.7", now.Add(want)) {
			t.Fatalf("lockout is not %v", want)
		}
	}
	// Quiet for long enough, the address starts afresh.
	if n, _ := g.failed("192.0.2.7", now.Add(failuresForget+time.Second)); n != 1 {
		t.Errorf("failures not forgotten: %d", n)
	}
	// The table of addresses stays bounded.
	for i := range guardedAddrs + 10 {
		g.failed("addr-"+string(rune('a'+i%26))+time.Duration(i).String(), now)
	}
	if len(g.addrs) > guardedAddrs {
		t.Errorf("%d addresses remembered, want at most %d", len(g.addrs), guardedAddrs)
	}
}
