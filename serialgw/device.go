package serialgw

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"go.bug.st/serial"
	"go.bug.st/serial/enumerator"
	"golang.org/x/sys/unix"
)

// DefaultTCPPort is the firmware's stream API port.
const DefaultTCPPort = "4403"

// DeviceAuto asks for USB auto-detection.
const DeviceAuto = "auto"

// Device says how to reach the radio.
type Device struct {
	Kind string // "serial", "tcp" or "auto"
	Addr string // the serial path or host:port
}

func (d Device) String() string {
	switch d.Kind {
	case "tcp":
		return "tcp://" + d.Addr
	case "auto":
		return DeviceAuto
	}
	return d.Addr
}

// ParseDevice parses a device name: a serial path, tcp://host[:port] or auto.
func ParseDevice(s string) (Device, error) {
	switch {
	case s == "" || s == DeviceAuto:
		return Device{Kind: "auto"}, nil
	case strings.HasPrefix(s, "tcp://"):
		hp := strings.TrimPrefix(s, "tcp://")
		hp = strings.TrimSuffix(hp, "/")
		if hp == "" {
			return Device{}, fmt.Errorf("device %q: no host", s)
		}
		if _, _, err := net.SplitHostPort(hp); err != nil {
			hp = net.JoinHostPort(strings.Trim(hp, "[]"), DefaultTCPPort)
		}
		host, port, err := net.SplitHostPort(hp)
		if err != nil {
			return Device{}, fmt.Errorf("device %q: %w", s, err)
		}
		if host == "" {
			return Device{}, fmt.Errorf("device %q: no host", s)
		}
		// A port that can never be dialled would be retried for ever.
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return Device{}, fmt.Errorf("device %q: port %q: want a number from 1 to 65535", s, port)
		}
		return Device{Kind: "tcp", Addr: hp}, nil
	case strings.Contains(s, "://"):
		return Device{}, fmt.Errorf("device %q: only tcp:// addresses, serial paths, auto and sim are understood", s)
	case strings.HasPrefix(s, "/"):
		return Device{Kind: "serial", Addr: s}, nil
	}
	return Device{}, fmt.Errorf("device %q: want a serial path such as /dev/ttyUSB0, tcp://host[:4403], auto or sim", s)
}

// usbVendors are the USB vendor ids of the serial bridges and native-USB
// chips that Meshtastic boards use.
var usbVendors = map[string]string{
	"10c4": "Silicon Labs CP210x",
	"1a86": "WCH CH34x/CH9102",
	"303a": "Espressif native USB",
	"239a": "Adafruit nRF52 (RAK4631, T-Echo)",
	"2e8a": "Raspberry Pi RP2040",
	"1915": "Nordic nRF52",
	"0403": "FTDI",
	"2886": "Seeed",
}

// ErrNoRadio is returned by auto-detection when no port looks like a radio.
var ErrNoRadio = errors.New("no Meshtastic radio found")

// detect picks the one USB serial port that looks like a Meshtastic radio.
func detect(list func() ([]*enumerator.PortDetails, error)) (string, error) {
	ports, err := list()
	if err != nil {
		return "", fmt.Errorf("listing serial ports: %w", err)
	}
	var found, seen []string
	for _, p := range ports {
		desc := p.Name
		if p.IsUSB {
			desc = fmt.Sprintf("%s (USB %s:%s %s)", p.Name, strings.ToLower(p.VID), strings.ToLower(p.PID), p.Product)
		}
		seen = append(seen, desc)
		if p.IsUSB {
			if _, ok := usbVendors[strings.ToLower(p.VID)]; ok {
				found = append(found, p.Name)
			}
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		if len(seen) == 0 {
			return "", fmt.Errorf("%w: no serial ports at all; is the radio plugged in? (or name its device: a serial path or tcp://host)", ErrNoRadio)
		}
		return "", fmt.Errorf("%w among serial ports: %s; name the right one as the device", ErrNoRadio, strings.Join(seen, ", "))
	}
	return "", fmt.Errorf("several serial ports look like Meshtastic radios: %s; name the right one as the device (a /dev/serial/by-id/ path keeps its name across replugs)",
		strings.Join(found, ", "))
}

// open connects to the radio. For auto, the port is detected anew on every
// attempt, so a radio that is plugged in later is found.
func (d Device) open(ctx context.Context) (io.ReadWriteCloser, string, error) {
	switch d.Kind {
	case "tcp":
		dialer := net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}
		c, err := dialer.DialContext(ctx, "tcp", d.Addr)
		if err != nil {
			return nil, "", err
		}
		return c, "tcp://" + d.Addr, nil
	case "auto":
		path, err := detect(func() ([]*enumerator.PortDetails, error) { return enumerator.GetDetailedPortsList() })
		if err != nil {
			return nil, "", err
		}
		p, err := openSerial(path)
		return p, path, err
	}
	p, err := openSerial(d.Addr)
	return p, d.Addr, err
}

// openSerial opens a serial port at 115200 8N1, exclusively, with HUPCL
// cleared first so that closing the port does not drop DTR, which resets
// boards whose DTR line is wired to the chip's reset pin. DTR and RTS are
// otherwise left as the driver sets them on open (asserted), which native-USB
// boards read as "host present".
func openSerial(path string) (io.ReadWriteCloser, error) {
	if err := clearHUPCL(path); err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	p, err := serial.Open(path, &serial.Mode{BaudRate: 115200, DataBits: 8, Parity: serial.NoParity, StopBits: serial.OneStopBit})
	if err != nil {
		var pe *serial.PortError
		if errors.As(err, &pe) && pe.Code() == serial.PortBusy {
			return nil, fmt.Errorf("open %s: in use by another program (another Meshtastic client, ModemManager, gpsd?)", path)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return p, nil
}

func clearHUPCL(path string) error {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return fmt.Errorf("not a serial device: %w", err)
	}
	if t.Cflag&unix.HUPCL == 0 {
		return nil
	}
	t.Cflag &^= unix.HUPCL
	return unix.IoctlSetTermios(fd, unix.TCSETS, t)
}
