package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/jshiffer/lora-xmpp-bridge/broker"
	"github.com/jshiffer/lora-xmpp-bridge/hass"
	"github.com/jshiffer/lora-xmpp-bridge/internal/meshsim"
	"github.com/jshiffer/lora-xmpp-bridge/internal/ops"
	"github.com/jshiffer/lora-xmpp-bridge/internal/spool"
	"github.com/jshiffer/lora-xmpp-bridge/serialgw"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
	"github.com/jshiffer/lora-xmpp-bridge/xmppgw"
)

// ErrXMPPAuth means the XMPP server refused the credentials.
var ErrXMPPAuth = xmppgw.ErrAuth

// Info describes a running daemon, for whoever started it.
type Info struct {
	MQTTAddr string // the embedded broker's listener, "" if none
	Radio    *meshsim.Radio
}

// bus is what the gateways need from a broker, plus closing it.
type bus interface {
	serialgw.Bus
	Close() error
}

// Run runs the bridge until ctx ends. ready, if set, is called once the
// broker is up and the gateways are starting.
func Run(ctx context.Context, c Config, log *slog.Logger, ready func(Info)) error {
	if err := c.Validate(); err != nil {
		return err
	}
	stateDir := c.StateDir
	if c.Device == DeviceSim {
		// The simulated radio's traffic must never reach a real radio: what
		// it leaves queued stays in a state of its own.
		stateDir = filepath.Join(c.StateDir, "sim")
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	warnIfReadableByOthers(log, "--password-file", c.PasswordFile)
	warnIfReadableByOthers(log, "--mqtt-credentials", c.MQTTCredentials)
	var info Info
	store, err := spool.Open(filepath.Join(stateDir, "spool.db"), spool.Options{Logger: log})
	if err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	defer store.Close()

	var b bus
	brokerUp := func() bool { return true } // the embedded broker is in process
	if c.MQTTBroker != "" {
		remote, err := dialBroker(ctx, c, stateDir, store, log)
		if err != nil {
			return err
		}
		b = remote
		brokerUp = remote.Connected
	} else {
		emb, err := broker.NewEmbedded(c.brokerConfig(), log)
		var credErr *broker.CredentialsError
		if errors.As(err, &credErr) {
			return usageErr("--mqtt-credentials: %w", err)
		}
		if err != nil {
			return err
		}
		if err := emb.Start(); err != nil {
			return fmt.Errorf("--mqtt-listen: %w", err)
		}
		info.MQTTAddr = emb.Addr()
		b = emb
	}
	// The broker closes last, so the gateways' final messages (the radio
	// going offline) still reach it.
	defer b.Close()

	// Everything that can fail is built before anything starts, so an
	// error leaves nothing running behind.
	var xg *xmppgw.Gateway
	if c.JID != "" {
		if c.Password != "" {
			log.Warn("the XMPP password was given with -p and is visible in the process list; use --password-file")
		}
		xc, err := c.xmppConfig(os.ReadFile)
		if err != nil {
			return usageErr("%w", err)
		}
		xc.RootCAs = c.xmppRoots
		xc.Spool = store
		if xg, err = xmppgw.New(xc, b, log); err != nil {
			return usageErr("%w", xmppFlagError(err))
		}
	}
	var hg *hass.Gateway
	if c.Hass {
		hc := hass.Config{Prefix: c.HassPrefix, Expire: c.HassExpire, StateDir: stateDir}
		if hg, err = hass.New(hc, b, log); err != nil {
			return usageErr("--hass: %w", err)
		}
	}
	// The simulated radio starts before the radio link is built, so that
	// the link is built with the radio's address. The group owns it from
	// here on: every return below stops the group and waits for it.
	ctx, cancelRun := context.WithCancel(ctx)
	g, ctx := errgroup.WithContext(ctx)
	defer func() {
		cancelRun()
		_ = g.Wait()
	}()
	var dev serialgw.Device
	if c.Device == DeviceSim {
		info.Radio = meshsim.New(meshsim.Demo())
		addr, serve, err := info.Radio.ListenTCP(ctx, "127.0.0.1:0")
		if err != nil {
			return err
		}
		g.Go(serve)
		dev = serialgw.Device{Kind: "tcp", Addr: addr.String()}
		log.Info("simulated radio listening", "addr", addr.String())
	} else if c.Device != DeviceNone {
		dev, _ = serialgw.ParseDevice(c.Device) // checked by Validate
	}
	var gw *serialgw.Gateway
	if c.Device != DeviceNone {
		gw, err = serialgw.New(serialgw.Config{
			Device: dev, Mesh: c.Mesh, Root: c.MQTTRoot, Encrypt: c.MQTTEncrypt, StateDir: stateDir, Spool: store,
			TextInterval: c.TextInterval, AirtimeShare: c.AirtimeShare, PublicBroker: c.MQTTBroker != "" && !broker.IsPrivate(c.MQTTBroker),
			MapReport: c.MapReport, MapReportPrecision: uint32(c.MapReportPrecision), // checked by Validate
		}, b, log)
		if err != nil {
			return err
		}
	} else {
		log.Info("no radio: only the XMPP side runs, with the radio sides on the broker")
	}

	metrics := ops.NewMetrics()
	registerMetrics(metrics, gw, xg)
	registerSpoolMetrics(metrics, store, gw, xg)
	health := func() ops.Health {
		h := ops.Health{Radio: ops.Off, XMPP: ops.Off, MQTT: ops.StateOf(brokerUp()), Airtime: ops.AirtimeOK}
		if gw != nil {
			h.Radio = ops.StateOf(gw.Up())
			if blocked, _ := gw.AirtimeBlocked(); blocked {
				h.Airtime = ops.AirtimeBlocked
			}
		}
		if xg != nil {
			h.XMPP = ops.StateOf(xg.Connected())
		}
		return h
	}
	opsSrv, err := ops.NewServer(ops.ServerConfig{Listen: c.MetricsListen, AllowRemote: c.MetricsRemote, Metrics: metrics, Health: health, Log: log})
	if err != nil {
		return usageErr("--metrics-listen: %w", err)
	}
	if opsSrv != nil {
		log.Info("metrics and health listening", "addr", opsSrv.Addr().String())
	}
	notifier := ops.NewNotifier(log)

	g.Go(func() error { return opsSrv.Run(ctx) })
	if xg != nil {
		g.Go(func() error { return xg.Run(ctx) })
		// The radio link starts once the XMPP gateway listens on the broker,
		// so no mesh text is missed. If Run fails first, ctx ends.
		select {
		case <-xg.Subscribed():
		case <-ctx.Done():
		}
	}
	if hg != nil {
		g.Go(func() error { return hg.Run(ctx) })
		// Likewise, so the radio's first telemetry reaches Home Assistant.
		select {
		case <-hg.Subscribed():
		case <-ctx.Done():
		}
	}
	if gw != nil {
		g.Go(func() error { return gw.Run(ctx) })
	}
	// systemd: ready once the broker listens and the gateways run; the
	// watchdog is petted only while every gateway's loop makes progress, so
	// a wedged loop gets the daemon restarted (an absent radio does not).
	alive := func() bool {
		const stall = 30 * time.Second
		if gw != nil && time.Since(gw.LastProgress()) > stall {
			return false
		}
		return xg == nil || time.Since(xg.LastProgress()) <= stall
	}
	g.Go(func() error { notifier.Watchdog(ctx, alive); return nil })
	_ = notifier.Ready("bridging")
	defer func() { _ = notifier.Stopping() }()
	g.Go(func() error {
		<-ctx.Done()
		log.Info("stopping")
		return nil
	})
	if ready != nil {
		ready(info)
	}
	return g.Wait()
}

// registerMetrics exposes the gateways' counters.
func registerMetrics(m *ops.Metrics, gw *serialgw.Gateway, xg *xmppgw.Gateway) {
	if gw != nil {
		registerRadioMetrics(m, gw)
	}
	if xg != nil {
		registerXMPPMetrics(m, xg)
	}
}

func registerRadioMetrics(m *ops.Metrics, gw *serialgw.Gateway) {
	st := &gw.Stats
	m.Counter("radio_frames_in_total", "Frames read from the radio.", nil, st.FramesIn.Load)
	m.Counter("radio_frames_dropped_total", "Frames dropped, by reason.", ops.Labels{"reason": "undecodable"}, st.FramesRejected.Load)
	m.Counter("radio_frames_dropped_total", "Frames dropped, by reason.", ops.Labels{"reason": "oversize"}, st.FramesOversize.Load)
	m.Counter("radio_log_lines_total", "Lines of console text from the radio.", nil, st.LogLines.Load)
	m.Counter("mesh_packets_in_total", "Packets heard by the radio.", nil, st.PacketsIn.Load)
	m.Counter("dedupe_hits_total", "Packets dropped as already seen.", ops.Labels{"side": "mesh"}, st.Duplicates.Load)
	m.Counter("mesh_packets_out_total", "Packets the radio accepted for sending.", nil, st.Sent.Load)
	m.Counter("mesh_send_failures_total", "Send requests refused or NAKed.", nil, st.SendFailed.Load)
	m.Counter("mqtt_downlink_rejected_total", "Downlink messages refused.", nil, st.DownlinkRejected.Load)
	m.Counter("handshakes_total", "Configuration handshakes with the radio.", nil, st.Handshakes.Load)
	m.Counter("reconnects_total", "Times a link was lost.", ops.Labels{"side": "radio"}, st.Reconnects.Load)
	m.Gauge("queue_depth", "Messages waiting to be sent.", ops.Labels{"side": "radio"}, func() float64 { return float64(gw.QueueLen()) })
	m.Gauge("up", "Whether a side is connected (1) or not (0).", ops.Labels{"side": "radio"}, func() float64 { return boolFloat(gw.Up()) })
	m.Gauge("airtime_used_seconds", "Airtime bridged packets used in the duty-cycle window.", nil, func() float64 { u, _ := gw.Airtime(); return u.Seconds() })
	m.Gauge("airtime_budget_seconds", "Airtime bridged packets may use in the duty-cycle window.", nil, func() float64 { _, a := gw.Airtime(); return a.Seconds() })
	m.Gauge("airtime_blocked", "Whether packets for the mesh wait because the airtime share is spent for now (1) or not (0).", nil, func() float64 { b, _ := gw.AirtimeBlocked(); return boolFloat(b) })
	m.Gauge("airtime_wait_seconds", "Seconds until the packet held back for airtime may go; 0 when none is.", nil, func() float64 { _, w := gw.AirtimeBlocked(); return w.Seconds() })
	m.Counter("mqtt_proxy_dropped_total", "Client proxy messages not passed to the radio, by reason.", ops.Labels{"reason": "oversize"}, st.ProxyOversize.Load)
	m.Counter("mqtt_proxy_dropped_total", "Client proxy messages not passed to the radio, by reason.", ops.Labels{"reason": "queue_full"}, st.ProxyQueueFull.Load)
	m.Family("mesh_naks_total", "Sends refused, by reason (from the radio, the mesh or the bridge).", ops.Counter, "reason", gw.NAKs)
}

func registerXMPPMetrics(m *ops.Metrics, xg *xmppgw.Gateway) {
	xs := &xg.Stats
	m.Counter("muc_messages_in_total", "Room messages sent on to the mesh.", nil, xs.RoomToMesh.Load)
	m.Counter("muc_messages_out_total", "Mesh texts posted to rooms.", nil, xs.MeshToRoom.Load)
	m.Counter("muc_refused_total", "Room messages the mesh did not take, told to the room.", nil, xs.Refused.Load)
	m.Counter("reconnects_total", "Times a link was lost.", ops.Labels{"side": "xmpp"}, xs.Disconnects.Load)
	m.Gauge("up", "Whether a side is connected (1) or not (0).", ops.Labels{"side": "xmpp"}, func() float64 { return boolFloat(xg.Connected()) })
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// registerSpoolMetrics exposes the depth and age of the durable queues,
// as each gateway names them.
func registerSpoolMetrics(m *ops.Metrics, store *spool.Store, gw *serialgw.Gateway, xg *xmppgw.Gateway) {
	queues := gw.SpoolQueues()
	if xg != nil {
		maps.Copy(queues, xg.SpoolQueues())
	}
	for label, q := range queues {
		m.Gauge("spool_depth", "Messages waiting on disk for the other side.", ops.Labels{"queue": label}, func() float64 {
			n, _, _, _ := store.Stats(q)
			return float64(n)
		})
		m.Gauge("spool_oldest_age_seconds", "Age of the oldest message waiting on disk.", ops.Labels{"queue": label}, func() float64 {
			n, _, oldest, _ := store.Stats(q)
			if n == 0 || oldest.IsZero() {
				return 0
			}
			return time.Since(oldest).Seconds()
		})
	}
}

// warnIfReadableByOthers warns about a secret file that users other than
// the daemon's own may read. It says nothing of a file it cannot stat: the
// open that follows reports that.
func warnIfReadableByOthers(log *slog.Logger, flag, path string) {
	if path == "" {
		return
	}
	fi, err := os.Stat(path)
	if err != nil {
		return
	}
	if fi.Mode().Perm()&0o007 != 0 {
		log.Warn("secret file is readable by other users; make it chmod 600 (or 640 for a group the daemon is in)", "flag", flag, "file", path, "mode", fi.Mode().Perm().String())
	}
}

// dialBroker connects to the external broker. The bridge's own topics go
// at QoS 1 through the spool, under a client id kept in the state
// directory, so the broker keeps the bridge's session across restarts.
func dialBroker(ctx context.Context, c Config, stateDir string, store *spool.Store, log *slog.Logger) (*broker.Remote, error) {
	pw, err := c.brokerPassword()
	if err != nil {
		return nil, usageErr("--mqtt-broker-password-file: %w", err)
	}
	id, err := clientID(stateDir)
	if err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	dialCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	remote, err := broker.DialRemote(dialCtx, broker.RemoteConfig{
		URL: c.MQTTBroker, Password: pw, CAFile: c.MQTTBrokerCA, ClientID: id,
		Outbox: store, Reliable: c.reliable, Will: radioSideWill(c, stateDir),
	}, log)
	if errors.Is(err, broker.ErrBrokerAuth) {
		return nil, usageErr("--mqtt-broker: %w", err)
	}
	if err != nil {
		return nil, fmt.Errorf("--mqtt-broker: %w", err)
	}
	return remote, nil
}

// reliable selects what crosses an external broker at QoS 1 through the
// outbox: the bridge's own topics, but for Home Assistant's node states,
// where the latest wins and a lost one is replaced by the next (they would
// crowd the outbox); and Home Assistant's discovery configs, whose removal
// must not be lost.
func (c Config) reliable(topic string) bool {
	if topics.IsHassNode(topic) {
		return false
	}
	return topics.IsBridgeTopic(topic) || (c.Hass && strings.HasPrefix(topic, c.hassPrefix()+"/") && strings.HasSuffix(topic, "/config"))
}

// radioSideWill is what the broker says in the radio side's place when it
// vanishes (killed, or its network gone): its radio is away, so an XMPP
// side hands what the room says to another radio on the mesh. It is named
// by the gateway id kept from an earlier run; a first start has none.
func radioSideWill(c Config, stateDir string) *broker.Will {
	if c.Device == DeviceNone {
		return nil
	}
	id := serialgw.KeptGatewayID(stateDir)
	if id == "" {
		return nil
	}
	rec, _ := json.Marshal(topics.StatusRecord{State: topics.LinkDisconnected, Device: c.Device, Node: id,
		Since: time.Now().UTC().Format(time.RFC3339), Error: "the radio side lost its connection to the MQTT broker"})
	return &broker.Will{Topic: topics.Status(id), Payload: rec}
}

// clientID returns the bridge's MQTT client id, made once and kept in the
// state directory: a broker keeps a session by its client id.
func clientID(stateDir string) (string, error) {
	path := filepath.Join(stateDir, "mqtt-client-id")
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	var r [6]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", err
	}
	id := "sovereign-bridge-" + hex.EncodeToString(r[:])
	// Written whole or not at all: an empty id after a power cut would
	// abandon the session the broker keeps for the bridge.
	tmp := path + ".new"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return "", err
	}
	_, err = f.WriteString(id + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return "", err
	}
	if d, err := os.Open(stateDir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return id, nil
}
