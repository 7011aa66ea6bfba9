package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/jshiffer/lora-xmpp-bridge/broker"
	"github.com/jshiffer/lora-xmpp-bridge/internal/meshsim"
	"github.com/jshiffer/lora-xmpp-bridge/serialgw"
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
	if err := os.MkdirAll(c.StateDir, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	var info Info

	var b bus
	if c.MQTTBroker != "" {
		dialCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		remote, err := broker.DialRemote(dialCtx, broker.RemoteConfig{URL: c.MQTTBroker}, log)
		cancel()
		if err != nil {
			return err
		}
		b = remote
	} else {
		emb, err := broker.NewEmbedded(broker.Config{Listen: c.MQTTListen, CredentialsFile: c.MQTTCredentials}, log)
		if err != nil {
			return err
		}
		if err := emb.Start(); err != nil {
			return err
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
			return usageErr("%v", err)
		}
		xc.RootCAs = c.xmppRoots
		if xg, err = xmppgw.New(xc, b, log); err != nil {
			return usageErr("%v", err)
		}
	}
	gw, err := serialgw.New(serialgw.Config{
		Root: c.MQTTRoot, Encrypt: c.MQTTEncrypt, StateDir: c.StateDir,
		TextInterval: c.TextInterval, RespectOKToMQTT: c.MQTTBroker != "" && !broker.IsPrivate(c.MQTTBroker),
	}, b, log)
	if err != nil {
		return err
	}

	g, ctx := errgroup.WithContext(ctx)
	var dev serialgw.Device
	if c.Device == DeviceSim {
		info.Radio = meshsim.New(meshsim.Demo())
		addr, serve, err := info.Radio.ListenTCP(ctx, "127.0.0.1:0")
		if err != nil {
			return err // nothing started yet
		}
		g.Go(serve)
		dev = serialgw.Device{Kind: "tcp", Addr: addr.String()}
		log.Info("simulated radio listening", "addr", addr.String())
	} else {
		dev, _ = serialgw.ParseDevice(c.Device)
	}

	gw.SetDevice(dev)
	g.Go(func() error { return gw.Run(ctx) })

	if xg != nil {
		g.Go(func() error { return xg.Run(ctx) })
	}
	if ready != nil {
		ready(info)
	}
	return g.Wait()
}
