package serialgw

import (
	"errors"
	"strings"
	"testing"

	"go.bug.st/serial/enumerator"
)

func TestParseDevice(t *testing.T) {
	tests := []struct {
		in      string
		want    Device
		wantErr bool
	}{
		{"", Device{Kind: "auto"}, false},
		{"auto", Device{Kind: "auto"}, false},
		{"/dev/ttyUSB0", Device{Kind: "serial", Addr: "/dev/ttyUSB0"}, false},
		{"/dev/serial/by-id/usb-Silicon_Labs_CP2102-if00-port0", Device{Kind: "serial", Addr: "/dev/serial/by-id/usb-Silicon_Labs_CP2102-if00-port0"}, false},
		{"tcp://meshtastic.local", Device{Kind: "tcp", Addr: "meshtastic.local:4403"}, false},
		{"tcp://10.0.0.5:4403", Device{Kind: "tcp", Addr: "10.0.0.5:4403"}, false},
		{"tcp://[::1]", Device{Kind: "tcp", Addr: "[::1]:4403"}, false},
		{"tcp://", Device{}, true},
		{"tcp://host:99999", Device{}, true},
		{"tcp://:0", Device{}, true},
		{"tcp://host:0", Device{}, true},
		{"tcp://:4403", Device{}, true},
		{"tcp://host:http", Device{}, true},
		{"tcp://host:65535", Device{Kind: "tcp", Addr: "host:65535"}, false},
		{"udp://x", Device{}, true},
		{"ttyUSB0", Device{}, true},
	}
	for _, tt := range tests {
		got, err := ParseDevice(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseDevice(%q) = %+v, %v; want %+v, err=%v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestDetect(t *testing.T) {
	cp2102 := &enumerator.PortDetails{Name: "/dev/ttyUSB0", IsUSB: true, VID: "10C4", PID: "EA60", Product: "CP2102"}
	rak := &enumerator.PortDetails{Name: "/dev/ttyACM0", IsUSB: true, VID: "239a", PID: "8029"}
	modem := &enumerator.PortDetails{Name: "/dev/ttyUSB1", IsUSB: true, VID: "12d1", PID: "1001", Product: "Huawei modem"}
	onboard := &enumerator.PortDetails{Name: "/dev/ttyS0"}
	list := func(p ...*enumerator.PortDetails) func() ([]*enumerator.PortDetails, error) {
		return func() ([]*enumerator.PortDetails, error) { return p, nil }
	}
	tests := []struct {
		name    string
		ports   []*enumerator.PortDetails
		want    string
		errHas  []string
		errNoRd bool
	}{
		{"one radio among others", []*enumerator.PortDetails{onboard, modem, cp2102}, "/dev/ttyUSB0", nil, false},
		{"native usb", []*enumerator.PortDetails{rak}, "/dev/ttyACM0", nil, false},
		{"nothing", nil, "", []string{"no serial ports at all", "plugged in"}, true},
		{"no radio", []*enumerator.PortDetails{onboard, modem}, "", []string{"/dev/ttyS0", "/dev/ttyUSB1 (USB 12d1:1001 Huawei modem)"}, true},
		{"two radios", []*enumerator.PortDetails{cp2102, rak}, "", []string{"/dev/ttyUSB0, /dev/ttyACM0", "by-id"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := detect(list(tt.ports...))
			if got != tt.want {
				t.Errorf("detect = %q, want %q (err %v)", got, tt.want, err)
			}
			for _, s := range tt.errHas {
				if err == nil || !strings.Contains(err.Error(), s) {
					t.Errorf("err = %v, want it to mention %q", err, s)
				}
			}
			if tt.errNoRd != errors.Is(err, ErrNoRadio) {
				t.Errorf("errors.Is(err, ErrNoRadio) = %v, want %v", errors.Is(err, ErrNoRadio), tt.errNoRd)
			}
		})
	}
}

func TestOpenSerialErrors(t *testing.T) {
	if _, err := openSerial("/nonexistent/ttyUSB9"); err == nil || !strings.Contains(err.Error(), "/nonexistent/ttyUSB9") {
		t.Errorf("missing device: err = %v", err)
	}
	if _, err := openSerial("/dev/null"); err == nil || !strings.Contains(err.Error(), "not a serial device") {
		t.Errorf("/dev/null: err = %v", err)
	}
}
