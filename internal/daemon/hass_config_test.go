package daemon

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Home Assistant discovery is off unless asked for, with the prefix Home
// Assistant uses by default and a day's expiry; the config file takes the
// same keys as the flags.
func TestHassFlags(t *testing.T) {
	c, err := Parse(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Hass || c.HassPrefix != "homeassistant" || c.HassExpire != 24*time.Hour {
		t.Errorf("defaults: hass %v, prefix %q, expire %v", c.Hass, c.HassPrefix, c.HassExpire)
	}
	c, err = Parse([]string{"--hass", "--hass-prefix", "ha/discovery", "--hass-expire", "6h"}, env(nil), io.Discard)
	if err != nil || c.Validate() != nil || !c.Hass || c.HassPrefix != "ha/discovery" || c.HassExpire != 6*time.Hour {
		t.Errorf("flags: %+v (%v)", c, err)
	}
	file := filepath.Join(t.TempDir(), "bridge.toml")
	os.WriteFile(file, []byte("hass = true\nhass-prefix = \"hass\"\nhass-expire = \"90m\"\n"), 0o600)
	c, err = Parse([]string{"--config", file}, env(nil), io.Discard)
	if err != nil || c.Validate() != nil || !c.Hass || c.HassPrefix != "hass" || c.HassExpire != 90*time.Minute {
		t.Errorf("config file: %+v (%v)", c, err)
	}
}

// What can never work ends with one line naming the flag: a usage error,
// exit status 78.
func TestHassFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--hass", "--hass-prefix", ""},
		{"--hass", "--hass-prefix", "home/#"},
		{"--hass", "--hass-prefix", "home/+/x"},
		{"--hass", "--hass-prefix", "/homeassistant"},
		{"--hass", "--hass-prefix", "homeassistant/"},
		{"--hass", "--hass-prefix", "sovereign/hass"},
		{"--hass", "--hass-expire", "30s"},
		{"--hass", "--hass-expire", "-1h"},
		{"--hass-prefix", "a//b"},
		{"--hass", "--mqtt-broker", "mqtt://test.mosquitto.org"}, // a public broker
	} {
		c, err := Parse(args, env(nil), io.Discard)
		if err == nil {
			err = c.Validate()
		}
		flag := args[len(args)-2]
		if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), flag) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: err = %v, want a one-line usage error naming %s", args, err, flag)
		}
	}
}

// Local tools may write Home Assistant's status topic, under the prefix
// in use: Home Assistant makes it its will, and the broker refuses a login
// whose will the client may not write. Nothing else of Home Assistant's,
// nor of the bridge's, is theirs to write.
func TestHassStatusWritable(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		status  string
		refused []string
	}{
		{nil, "homeassistant/status", []string{"ha/status"}},
		{[]string{"--hass", "--hass-prefix", "ha"}, "ha/status", []string{"homeassistant/status"}},
	} {
		c, err := Parse(tc.args, env(nil), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		may := c.brokerConfig().IsDownlink
		if !may(tc.status) || !may("msh/EU_868/2/json/mqtt/") {
			t.Errorf("%v: %s or the downlink not writable", tc.args, tc.status)
		}
		for _, topic := range append(tc.refused, "homeassistant/sensor/x/y/config", "ha/sensor/x/y/config", "sovereign/hass/availability", "homeassistant/status/x") {
			if may(topic) {
				t.Errorf("%v: %s writable", tc.args, topic)
			}
		}
	}
}
