// Command sovereign-bridge bridges a Meshtastic LoRa mesh with MQTT and a
// federated XMPP multi-user chat.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/jshiffer/lora-xmpp-bridge/internal/daemon"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit statuses for failures that restarting cannot fix, so a supervisor
// should not restart the daemon until the configuration is changed.
const (
	exitNoPerm = 77 // EX_NOPERM: the XMPP server refused the credentials
	exitConfig = 78 // EX_CONFIG: the configuration can never work
)

func main() {
	os.Exit(run())
}

func run() int {
	cfg, err := daemon.Parse(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sovereign-bridge:", err)
		return exitConfig
	}
	if cfg.ShowVersion {
		fmt.Println("sovereign-bridge", version)
		return 0
	}
	log := daemon.NewLogger(cfg, os.Stderr)
	log.Info("starting", "version", version)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := daemon.Run(ctx, cfg, log, nil); err != nil {
		log.Error("stopped", "err", err)
		switch {
		case errors.Is(err, daemon.ErrUsage):
			return exitConfig
		case errors.Is(err, daemon.ErrXMPPAuth):
			return exitNoPerm
		}
		return 1
	}
	log.Info("stopped")
	return 0
}
