// Package daemon wires the bridge together: it turns the command line and
// config file into a Config, builds the broker and the gateways, runs them
// under one errgroup and shuts them down in order.
package daemon

import (
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
	"mellium.im/xmpp/jid"

	"github.com/jshiffer/lora-xmpp-bridge/broker"
	"github.com/jshiffer/lora-xmpp-bridge/hass"
	"github.com/jshiffer/lora-xmpp-bridge/internal/secret"
	"github.com/jshiffer/lora-xmpp-bridge/serialgw"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
	"github.com/jshiffer/lora-xmpp-bridge/xmppgw"
)

// Device values the daemon understands beyond the radio link's own.
const (
	// DeviceSim selects the built-in simulated radio.
	DeviceSim = "sim"
	// DeviceNone runs no radio link: the daemon is only the XMPP side,
	// meeting radio-side daemons on the broker.
	DeviceNone = "none"
)

// Config is everything the daemon is told.
type Config struct {
	Device          string
	MQTTListen      string
	MQTTCredentials string
	MQTTMaxConns    int
	MQTTBroker      string
	MQTTBrokerPass  string // file
	MQTTBrokerCA    string // file
	MQTTRoot        string
	MQTTEncrypt     bool
	Mesh            string
	StateDir        string
	TextInterval    time.Duration
	AirtimeShare    float64
	LogLevel        string
	LogFormat       string
	ShowVersion     bool
	MetricsListen   string
	MetricsRemote   bool
	// MapReport publishes the firmware's map report on <root>/2/map/, at
	// MapReportPrecision bits of position.
	MapReport          bool
	MapReportPrecision uint
	// Hass announces the mesh to Home Assistant through MQTT discovery
	// under HassPrefix; nodes unheard for HassExpire are removed.
	Hass       bool
	HassPrefix string
	HassExpire time.Duration

	// The XMPP side.
	JID          string
	Password     secret.String
	PasswordFile string
	Room         string
	Nick         string
	XMPPServer   string
	XMPPFormat   string
	XMPPMaxParts int
	// XMPPEditWindow: how long after a room message went out over radio a
	// correction of it is still sent, once, as "nick (edit): ...".
	XMPPEditWindow time.Duration
	XMPPBinding    bool
	DMJID          string
	PeerBridges    string // comma-separated JIDs
	DMAllow        string // comma-separated JIDs
	// Rooms are extra channel <-> room pairs from the config file.
	Rooms []RoomConfig

	xmppRoots *x509.CertPool // tests only; production uses the system roots
}

// RoomConfig maps a mesh channel to a room, from a [[rooms]] table of the
// config file.
type RoomConfig struct {
	JID          string `toml:"jid"`
	Nick         string `toml:"nick"`
	Channel      string `toml:"channel"`
	ChannelIndex *int   `toml:"channel-index"`
}

// ErrUsage marks errors in what the daemon was told, as opposed to what
// happened while running; the command exits with EX_CONFIG for them so a
// supervisor does not restart it in a loop.
var ErrUsage = errors.New("configuration error")

// usageErr formats like fmt.Errorf, so a %w in format keeps the cause
// reachable through errors.Is and errors.As.
func usageErr(format string, args ...any) error {
	return fmt.Errorf("%w: %w", ErrUsage, fmt.Errorf(format, args...))
}

// Parse reads the command line (and the config file it names) into a
// Config. getenv supplies the environment, for the state directory default.
func Parse(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("sovereign-bridge", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile := ""
	str := func(p *string, names []string, def, usage string) {
		for _, n := range names {
			fs.StringVar(p, n, def, usage)
		}
	}
	str(&configFile, []string{"config"}, "", "TOML `file` whose keys are the long flag names; flags override it")
	str(&c.Device, []string{"device"}, serialgw.DeviceAuto, "radio: auto, a serial `path`, tcp://host[:4403], sim, or none for the XMPP side alone")
	str(&c.MQTTListen, []string{"mqtt-listen"}, "127.0.0.1:1883", "embedded broker listen `address`, or off")
	str(&c.MQTTCredentials, []string{"mqtt-credentials"}, "", "embedded broker users `file` (YAML: users: {name: {password: ...}})")
	fs.IntVar(&c.MQTTMaxConns, "mqtt-max-connections", broker.DefaultMaxConnections, "most sockets the embedded broker keeps open at once; more are refused")
	str(&c.MQTTBroker, []string{"mqtt-broker"}, "", "use an external broker at this `URL` instead of the embedded one")
	str(&c.MQTTBrokerPass, []string{"mqtt-broker-password-file"}, "", "read the external broker's password from `file` (the user goes in the URL: mqtt://user@host)")
	str(&c.MQTTBrokerCA, []string{"mqtt-broker-ca"}, "", "PEM `file` of the CAs to trust for an mqtts:// broker (default: the system's)")
	str(&c.MQTTRoot, []string{"mqtt-root"}, "", "topic `root` (default msh/<region of the radio>)")
	fs.BoolVar(&c.MQTTEncrypt, "mqtt-encrypt", true, "publish envelopes encrypted with the channel key, as the firmware does")
	fs.BoolVar(&c.MapReport, "map-report", false, "publish the firmware's map report on <root>/2/map/ at most hourly, so meshmap.net and meshtastic-map show the gateway")
	fs.UintVar(&c.MapReportPrecision, "map-report-precision", serialgw.DefaultMapReportPrecision, "`bits` of latitude and longitude the map report keeps, 12 (about 6 km) to 15 (about 700 m)")
	str(&c.Mesh, []string{"mesh"}, "", "the `name` of the mesh this radio is on; daemons whose radios share a name are treated as one mesh, and a room message goes out on one of them")
	str(&c.StateDir, []string{"state-dir"}, "", "state `directory` (default $STATE_DIRECTORY, else $XDG_STATE_HOME/sovereign-bridge)")
	fs.DurationVar(&c.TextInterval, "text-interval", 2500*time.Millisecond, "minimum spacing of texts sent to the mesh (the firmware drops texts under 2s apart)")
	fs.Float64Var(&c.AirtimeShare, "airtime-share", 0.5, "share of the region's duty cycle that bridged packets may use (EU_868: 10% of an hour for all a node sends)")
	str(&c.LogLevel, []string{"log-level"}, "info", "debug, info, warn or error")
	str(&c.LogFormat, []string{"log-format"}, "text", "text or json")
	fs.BoolVar(&c.ShowVersion, "version", false, "print the version and exit")
	str(&c.MetricsListen, []string{"metrics-listen"}, "off", "HTTP `address` for /metrics (Prometheus) and /healthz, loopback only; off by default")
	fs.BoolVar(&c.MetricsRemote, "metrics-allow-remote", false, "allow --metrics-listen beyond loopback (the endpoint has no authentication and shows node ids and activity)")
	fs.BoolVar(&c.Hass, "hass", false, "announce the mesh nodes and the bridge to Home Assistant through MQTT discovery")
	str(&c.HassPrefix, []string{"hass-prefix"}, hass.DefaultPrefix, "Home Assistant's MQTT discovery `prefix`")
	fs.DurationVar(&c.HassExpire, "hass-expire", hass.DefaultExpire, "remove a node's Home Assistant entities once it has not been heard for this long (also each sensor's expire_after)")
	str(&c.JID, []string{"j", "jid"}, "", "XMPP `JID` of the bridge account")
	fs.Var(&c.Password, "p", "XMPP password (visible in the process list: prefer --password-file)")
	fs.Var(&c.Password, "password", "XMPP password (visible in the process list: prefer --password-file)")
	str(&c.PasswordFile, []string{"password-file"}, "", "read the XMPP password from `file`")
	str(&c.Room, []string{"r", "room"}, "", "MUC `room` JID")
	str(&c.Nick, []string{"n", "nick"}, "", "`nick` in the room")
	str(&c.XMPPServer, []string{"xmpp-server"}, "", "XMPP server `host:port` (skips the SRV lookup)")
	str(&c.XMPPFormat, []string{"xmpp-format"}, "{name}: {text}", "how mesh texts appear in the room: {name} {long} {short} {id} {channel} {text}")
	fs.IntVar(&c.XMPPMaxParts, "xmpp-max-parts", 4, "most mesh packets one room message may become (longer ones are refused with a reply)")
	fs.DurationVar(&c.XMPPEditWindow, "xmpp-edit-window", xmppgw.DefaultEditWindow, "how long after a room message went out over radio a correction of it is still sent, once, as \"nick (edit): ...\"")
	fs.BoolVar(&c.XMPPBinding, "xmpp-channel-binding", false, "offer SCRAM-*-PLUS (TLS channel binding) first; breaks on ejabberd before 24.02")
	str(&c.DMJID, []string{"dm-jid"}, "", "`JID` that receives direct messages sent to the radio (default: not forwarded)")
	str(&c.PeerBridges, []string{"peer-bridges"}, "", "comma-separated `JIDs` of other bridges in the same rooms to cooperate with: each mesh text posted once, one radio per mesh sends")
	str(&c.DMAllow, []string{"dm-allow"}, "", "comma-separated `JIDs` that may write to mesh nodes through the bridge besides the bridged rooms' occupants")

	// A mistyped flag gets one line and a hint, not the whole usage; -h
	// prints the usage.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fmt.Fprintln(stderr, "Usage of sovereign-bridge:")
			fs.PrintDefaults()
			return c, err
		}
		return c, fmt.Errorf("%w: %w (sovereign-bridge -h lists the flags)", ErrUsage, err)
	}
	if fs.NArg() > 0 {
		return c, usageErr("unexpected argument %q", fs.Arg(0))
	}
	if configFile != "" {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		rooms, err := applyFile(fs, configFile, set)
		if err != nil {
			return c, err
		}
		c.Rooms = rooms
	}
	if c.StateDir == "" {
		c.StateDir = defaultStateDir(getenv)
	}
	return c, nil
}

// applyFile sets, from a TOML file, every flag not given on the command
// line, and returns the file's [[rooms]] tables.
func applyFile(fs *flag.FlagSet, path string, setOnCommandLine map[string]bool) ([]RoomConfig, error) {
	var values map[string]any
	if _, err := toml.DecodeFile(path, &values); err != nil {
		return nil, usageErr("config file %s: %w", path, err)
	}
	var rooms struct {
		Rooms []RoomConfig `toml:"rooms"`
	}
	if md, err := toml.DecodeFile(path, &rooms); err != nil {
		return nil, usageErr("config file %s: [[rooms]]: %w", path, err)
	} else if undecoded := md.Undecoded(); len(undecoded) > 0 {
		for _, k := range undecoded {
			if len(k) > 1 && k[0] == "rooms" {
				return nil, usageErr("config file %s: unknown room setting %q (want jid, nick, channel or channel-index)", path, k.String())
			}
		}
	}
	delete(values, "rooms")
	for key, v := range values {
		f := fs.Lookup(key)
		if f == nil || len(key) == 1 {
			return nil, usageErr("config file %s: unknown setting %q", path, key)
		}
		if setOnCommandLine[key] {
			continue
		}
		var s string
		switch v := v.(type) {
		case string:
			s = v
		case bool, int64, float64:
			s = fmt.Sprint(v)
		default:
			return nil, usageErr("config file %s: setting %q must be a string, number or boolean", path, key)
		}
		if err := fs.Set(key, s); err != nil {
			return nil, usageErr("config file %s: %s: %w", path, key, err)
		}
	}
	return rooms.Rooms, nil
}

func defaultStateDir(getenv func(string) string) string {
	if d := getenv("STATE_DIRECTORY"); d != "" {
		// systemd may pass several, separated by colons; the first is ours.
		return strings.Split(d, ":")[0]
	}
	if d := getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "sovereign-bridge")
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".local", "state", "sovereign-bridge")
	}
	return "sovereign-bridge-state"
}

// Validate checks the configuration without touching the network.
func (c Config) Validate() error {
	if c.Device == DeviceNone && c.JID == "" {
		return usageErr("--device none runs only the XMPP side: give the bridge's XMPP account with -j, or a radio")
	}
	if c.Device != DeviceSim && c.Device != DeviceNone {
		if _, err := serialgw.ParseDevice(c.Device); err != nil {
			return usageErr("--device: %w", err)
		}
	}
	if c.MQTTBroker != "" {
		if err := (broker.RemoteConfig{URL: c.MQTTBroker}).Validate(); err != nil {
			return usageErr("--mqtt-broker: %w", err)
		}
		if _, err := c.brokerPassword(); err != nil {
			return usageErr("--mqtt-broker-password-file: %w", err)
		}
		if c.MQTTBrokerCA != "" {
			if _, err := os.Stat(c.MQTTBrokerCA); err != nil {
				return usageErr("--mqtt-broker-ca: %w", err)
			}
		}
		if c.MQTTCredentials != "" {
			return usageErr("--mqtt-credentials is for the embedded broker; with --mqtt-broker the external broker's own users apply")
		}
	} else if c.MQTTBrokerPass != "" || c.MQTTBrokerCA != "" {
		return usageErr("--mqtt-broker-password-file and --mqtt-broker-ca go with --mqtt-broker")
	} else {
		if err := c.brokerConfig().Validate(); err != nil {
			if errors.Is(err, broker.ErrNoCredentials) {
				return usageErr("--mqtt-listen needs --mqtt-credentials: %w", err)
			}
			return usageErr("--mqtt-listen: %w", err)
		}
		if c.MQTTCredentials != "" {
			if _, err := broker.LoadCredentials(c.MQTTCredentials); err != nil {
				return usageErr("--mqtt-credentials %s: %w", c.MQTTCredentials, err)
			}
		}
	}
	if strings.ContainsAny(c.MQTTRoot, "+#\x00") || strings.HasPrefix(c.MQTTRoot, "/") || strings.Contains(c.MQTTRoot, "//") {
		return usageErr("--mqtt-root %q: a topic root has no wildcards (+ #), no leading slash and no empty levels, e.g. msh/EU_868", c.MQTTRoot)
	}
	if err := validMeshName(c.Mesh); err != nil {
		return usageErr("--mesh %q: %w", c.Mesh, err)
	}
	if err := serialgw.ValidMapReportPrecision(uint32(min(c.MapReportPrecision, 1<<32-1))); err != nil {
		return usageErr("--map-report-precision %d: %w", c.MapReportPrecision, err)
	}
	if c.MQTTMaxConns < 1 {
		return usageErr("--mqtt-max-connections %d: want at least 1", c.MQTTMaxConns)
	}
	prefix := c.hassPrefix()
	if c.Hass {
		prefix = c.HassPrefix
	}
	if err := hass.ValidPrefix(prefix); err != nil {
		return usageErr("--hass-prefix: %w", err)
	}
	// Below a minute every node would come and go between its packets.
	if (c.Hass || c.HassExpire != 0) && c.HassExpire < time.Minute {
		return usageErr("--hass-expire %v: want at least 1m (the default is %v)", c.HassExpire, hass.DefaultExpire)
	}
	// The states are retained positions, names and telemetry of everyone on
	// the mesh, whatever their "OK to MQTT": not for a broker the world reads.
	if c.Hass && c.MQTTBroker != "" && !broker.IsPrivate(c.MQTTBroker) {
		return usageErr("--hass with --mqtt-broker on a public address: Home Assistant's states would publish every node's position and telemetry to whoever reads that broker; use a broker on a private address")
	}
	if c.TextInterval <= 0 {
		return usageErr("--text-interval %v: want a positive duration (the firmware drops texts less than 2s apart; the default is 2.5s)", c.TextInterval)
	}
	// Written so that NaN, which fails every comparison, is refused too.
	if !(c.AirtimeShare > 0 && c.AirtimeShare <= 1) {
		return usageErr("--airtime-share %v: want a fraction above 0 and at most 1", c.AirtimeShare)
	}
	if c.XMPPMaxParts < 1 {
		return usageErr("--xmpp-max-parts %d: want at least 1", c.XMPPMaxParts)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return usageErr("%w", err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return usageErr("--log-format %q: want text or json", c.LogFormat)
	}
	if c.JID == "" {
		if c.Room != "" || len(c.Rooms) > 0 || c.Password != "" || c.PasswordFile != "" || c.XMPPServer != "" || c.DMJID != "" || c.PeerBridges != "" || c.DMAllow != "" {
			return usageErr("XMPP settings given without -j/--jid: give the bridge's XMPP account, or drop them to bridge only the mesh and MQTT")
		}
		return nil
	}
	if c.Password != "" && c.PasswordFile != "" {
		return usageErr("give either -p/--password or --password-file, not both")
	}
	if c.Password == "" && c.PasswordFile == "" {
		return usageErr("no XMPP password: give --password-file FILE")
	}
	if c.Room == "" && len(c.Rooms) == 0 {
		return usageErr("no room: give -r room@conference.example.org")
	}
	if c.Room != "" && c.Nick == "" {
		return usageErr("no nick for the room: give -n NICK")
	}
	if _, err := c.xmppConfig(os.ReadFile); err != nil {
		return usageErr("%w", err)
	}
	return nil
}

// maxMeshName bounds a mesh name, which every radio record carries.
const maxMeshName = 64

// validMeshName checks a --mesh name. It is published in the radio record
// and compared as it is, so it is kept to plain text that could also name
// a topic level.
func validMeshName(name string) error {
	if len(name) > maxMeshName {
		return fmt.Errorf("%d bytes; a mesh name has at most %d", len(name), maxMeshName)
	}
	if !utf8.ValidString(name) || strings.ContainsAny(name, "/+#") || strings.ContainsFunc(name, unicode.IsControl) {
		return errors.New("a mesh name is text without / + # or control characters")
	}
	return nil
}

// brokerPassword reads the external broker's password file, if one is given.
func (c Config) brokerPassword() (secret.String, error) {
	if c.MQTTBrokerPass == "" {
		return "", nil
	}
	b, err := os.ReadFile(c.MQTTBrokerPass)
	if err != nil {
		return "", err
	}
	pw := secret.String(strings.TrimRight(string(b), "\r\n"))
	if pw == "" {
		return "", fmt.Errorf("%s is empty", c.MQTTBrokerPass)
	}
	return pw, nil
}

// hassPrefix is the Home Assistant discovery prefix, also without --hass:
// Home Assistant's status topic is under it.
func (c Config) hassPrefix() string {
	if c.HassPrefix == "" {
		return hass.DefaultPrefix
	}
	return c.HassPrefix
}

// brokerConfig is the embedded broker's configuration. Local tools may
// write only the firmware's JSON downlink, and Home Assistant's status
// topic: Home Assistant publishes its start there and makes it its will,
// and the broker refuses a login whose will the client may not write.
func (c Config) brokerConfig() broker.Config {
	haStatus := hass.StatusTopic(c.hassPrefix())
	mayWrite := func(topic string) bool { return topics.IsJSONDownlink(topic) || topic == haStatus }
	return broker.Config{
		Listen: c.MQTTListen, CredentialsFile: c.MQTTCredentials, MaxConnections: c.MQTTMaxConns, IsDownlink: mayWrite, IsOwn: topics.IsBridgeTopic,
	}
}

// xmppConfig builds the XMPP gateway's configuration; readFile reads the
// password file.
func (c Config) xmppConfig(readFile func(string) ([]byte, error)) (xmppgw.Config, error) {
	var xc xmppgw.Config
	j, err := jid.Parse(c.JID)
	if err != nil {
		return xc, fmt.Errorf("-j %q: %w", c.JID, err)
	}
	xc.JID, xc.Server, xc.Format, xc.MaxChunks = j, c.XMPPServer, c.XMPPFormat, c.XMPPMaxParts
	xc.ChannelBinding = c.XMPPBinding
	xc.EditWindow = c.XMPPEditWindow
	xc.Password = c.Password
	if c.PasswordFile != "" {
		b, err := readFile(c.PasswordFile)
		if err != nil {
			return xc, fmt.Errorf("--password-file: %w", err)
		}
		xc.Password = secret.String(strings.TrimRight(string(b), "\r\n"))
		if xc.Password == "" {
			return xc, fmt.Errorf("--password-file %s is empty", c.PasswordFile)
		}
	}
	if c.DMJID != "" {
		if xc.DMJID, err = jid.Parse(c.DMJID); err != nil {
			return xc, fmt.Errorf("--dm-jid %q: %w", c.DMJID, err)
		}
	}
	for _, p := range strings.Split(c.PeerBridges, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		pj, err := jid.Parse(p)
		if err != nil {
			return xc, fmt.Errorf("--peer-bridges %q: %w", p, err)
		}
		xc.PeerBridges = append(xc.PeerBridges, pj.Bare())
	}
	for _, a := range strings.Split(c.DMAllow, ",") {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		aj, err := jid.Parse(a)
		if err != nil || aj.Localpart() == "" || aj.Resourcepart() != "" {
			return xc, fmt.Errorf("--dm-allow %q: want accounts such as alice@example.org, comma-separated", a)
		}
		xc.DMAllow = append(xc.DMAllow, aj)
	}
	rooms := c.Rooms
	if c.Room != "" {
		rooms = append([]RoomConfig{{JID: c.Room, Nick: c.Nick}}, rooms...)
	}
	for _, r := range rooms {
		rj, err := jid.Parse(r.JID)
		if err != nil {
			return xc, fmt.Errorf("room %q: %w", r.JID, err)
		}
		nick := r.Nick
		if nick == "" {
			nick = c.Nick
		}
		room := xmppgw.Room{JID: rj, Nick: nick, Channel: r.Channel}
		if r.ChannelIndex != nil {
			if *r.ChannelIndex < 0 || *r.ChannelIndex > 7 {
				return xc, fmt.Errorf("room %s: channel-index %d: a radio has channels 0 to 7", r.JID, *r.ChannelIndex)
			}
			room.ByIndex, room.Index = true, uint32(*r.ChannelIndex)
		}
		xc.Rooms = append(xc.Rooms, room)
	}
	xc.Defaults()
	return xc, xmppFlagError(xc.Validate())
}

// xmppFlags names, for each xmppgw.Config field, the flag that sets it.
// Room settings are not listed: their errors name the room, as given by
// -r or a [[rooms]] table.
var xmppFlags = map[string]string{
	"JID":       "-j/--jid",
	"Password":  "--password-file",
	"Server":    "--xmpp-server",
	"Format":    "--xmpp-format",
	"MaxChunks": "--xmpp-max-parts",
	"DMAllow":   "--dm-allow",
}

// xmppFlagError puts the name of the flag at fault in front of an error
// from xmppgw's validation, which knows only its own field names.
func xmppFlagError(err error) error {
	var ce *xmppgw.ConfigError
	if errors.As(err, &ce) {
		if flag, ok := xmppFlags[ce.Field]; ok {
			return fmt.Errorf("%s: %w", flag, err)
		}
	}
	return err
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// NewLogger builds the daemon's logger.
func NewLogger(c Config, w io.Writer) *slog.Logger {
	level, _ := parseLevel(c.LogLevel)
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
