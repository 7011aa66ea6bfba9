# NixOS module for sovereign-bridge (SovereignRelay): a Meshtastic LoRa radio
# on USB, an embedded MQTT broker, and an XMPP multi-user chat room.
#
# Use it without flakes by path (the root module.nix imports this file):
#
#   imports = [ /etc/nixos/lora-xmpp-bridge/module.nix ];
#   services.sovereign-bridge = {
#     enable = true;
#     jid = "your_jid@xmpp.org";
#     passwordFile = "/run/secrets/xmpp_password";
#     room = "your_room@conference.xmpp.org";
#     nick = "meshbridge";
#   };
#
# or from the flake as nixosModules.default. Without the flake's overlay the
# package is built from this checkout (./package.nix).
#
# Keep the unit in step with dist/sovereign-bridge.service (the same unit for
# Debian / Raspberry Pi OS); .ci/nix-checks compares the two.
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:

let
  cfg = config.services.sovereign-bridge;

  # The daemon speaks sd_notify: READY=1 once its broker listens and its
  # gateways run, WATCHDOG=1 every half interval while its loops make
  # progress (a wedged loop stops it petting after 30 s, so systemd
  # restarts it within the minute; a missing radio does not).
  daemonSpeaksNotify = true;
  watchdogSec = "60s";

  settingsFormat = pkgs.formats.toml { };
  configFile = settingsFormat.generate "sovereign-bridge.toml" cfg.settings;

  # A secret file: an absolute path given as a string, outside the Nix store.
  # A Nix path literal (./secret) or anything under /nix/store would put the
  # secret into the world-readable store, so both are rejected here.
  secretFile =
    lib.types.addCheck lib.types.str (
      s: lib.hasPrefix "/" s && !(lib.hasPrefix "${builtins.storeDir}/" s)
    )
    // {
      description = "absolute path outside the Nix store, given as a string (not a Nix path)";
    };

  # The embedded broker's address: "off", or host:port with a port from 1
  # to 65535, written without leading zeros. Only the port is checked; an
  # IPv6 host goes in brackets: [::1]:1883.
  listenAddress =
    lib.types.addCheck (lib.types.strMatching "off|.+:[1-9][0-9]{0,4}") (
      s: s == "off" || lib.toInt (lib.last (lib.splitString ":" s)) <= 65535
    )
    // {
      description = "\"off\", or host:port with a port from 1 to 65535";
    };

  # Flags the module sets itself; settings must not set them as well.
  reservedKeys = {
    "device" = "device";
    "mqtt-listen" = "mqtt.listen";
    "mqtt-credentials" = "mqtt.credentialsFile";
    "log-level" = "logLevel";
    "jid" = "jid";
    "password" = "passwordFile";
    "password-file" = "passwordFile";
    "room" = "room";
    "nick" = "nick";
    "state-dir" = "stateDir";
    "config" = "settings";
  };
  clashingKeys = builtins.filter (k: cfg.settings ? ${k}) (builtins.attrNames reservedKeys);

  # Settings the daemon refuses without an XMPP account (exit status 78).
  xmppOnlyKeys = builtins.filter (k: cfg.settings ? ${k}) [
    "rooms"
    "xmpp-server"
    "dm-jid"
    "dm-allow"
  ];
  hasExtraRooms = (cfg.settings.rooms or [ ]) != [ ];

  listenParts = lib.splitString ":" cfg.mqtt.listen;
  listenOff = cfg.mqtt.listen == "off";
  listenHost = lib.concatStringsSep ":" (lib.init listenParts);
  listenPort = if listenOff then null else lib.toInt (lib.last listenParts);
  listenIsLoopback =
    listenOff || listenHost == "localhost" || lib.hasPrefix "127." listenHost || listenHost == "[::1]";

  # The command line. Secrets are handed over as systemd credentials: systemd
  # copies the file into a private directory only this service can read, and
  # the daemon gets the path ("%d" is that directory, $CREDENTIALS_DIRECTORY),
  # never the secret itself. Keep nixos/testdata/module-argv.txt in step.
  esc = utils.escapeSystemdExecArg;
  credentialArg = flag: name: "--${flag}=%d/${name}"; # raw: %d must stay a specifier
  execArgs =
    [
      (esc "--device=${cfg.device}")
      (esc "--mqtt-listen=${cfg.mqtt.listen}")
    ]
    ++ lib.optional (cfg.mqtt.credentialsFile != null) (credentialArg "mqtt-credentials" "mqtt-credentials")
    ++ [ (esc "--log-level=${cfg.logLevel}") ]
    ++ lib.optional (cfg.settings != { }) (esc "--config=${configFile}")
    ++ lib.optionals (cfg.jid != null) (
      [
        (esc "--jid=${cfg.jid}")
        (credentialArg "password-file" "xmpp-password")
      ]
      ++ lib.optional (cfg.room != null) (esc "--room=${cfg.room}")
      ++ [ (esc "--nick=${cfg.nick}") ]
    );

  udevRulesPackage = pkgs.writeTextFile {
    name = "sovereign-bridge-udev-rules";
    text = builtins.readFile ../dist/70-sovereign-bridge-radio.rules;
    destination = "/lib/udev/rules.d/70-sovereign-bridge-radio.rules";
  };
in
{
  options.services.sovereign-bridge = {
    enable = lib.mkEnableOption "the SovereignRelay bridge between a Meshtastic LoRa mesh, MQTT and an XMPP chat room";

    package = lib.mkOption {
      type = lib.types.package;
      default = pkgs.sovereign-bridge or (pkgs.callPackage ./package.nix { });
      defaultText = lib.literalExpression "pkgs.sovereign-bridge or (pkgs.callPackage ./nixos/package.nix { })";
      description = ''
        The sovereign-bridge package. By default the one from the flake's
        overlay if it is applied, else built from this checkout.
      '';
    };

    jid = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "your_jid@xmpp.org";
      description = ''
        XMPP account of the bridge. Leave it null to run the bridge between
        the mesh and MQTT only, without XMPP.
      '';
    };

    passwordFile = lib.mkOption {
      type = lib.types.nullOr secretFile;
      default = null;
      example = "/run/secrets/xmpp_password";
      description = ''
        File holding the XMPP password (a trailing newline is ignored),
        readable by root. systemd hands it to the service as a credential
        (LoadCredential=), so the password is never in the Nix store, the
        unit file, the environment or the process list. Must be a string
        path outside the Nix store; sops-nix and agenix paths are fine.
        A file made by hand belongs on persistent storage, for example
        `/etc/sovereign-bridge/xmpp-password` (owner root, mode 0600):
        `/run` is emptied at every boot. While the file is missing the
        service fails to start and is retried every 10 seconds.
      '';
    };

    room = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "your_room@conference.xmpp.org";
      description = ''
        JID of the multi-user chat room the bridge joins, for the mesh's
        primary channel. Further rooms, for other channels, go into
        {option}`services.sovereign-bridge.settings` as `rooms`.
      '';
    };

    nick = lib.mkOption {
      type = lib.types.str;
      default = "meshbridge";
      description = "Nickname of the bridge in the room.";
    };

    device = lib.mkOption {
      type = lib.types.str;
      default = "auto";
      example = "/dev/serial/by-id/usb-Silicon_Labs_CP2102_USB_to_UART_Bridge_Controller_0001-if00-port0";
      description = ''
        The radio. `auto` finds a USB Meshtastic radio by itself, and again
        after a replug. Otherwise a serial path, best one that survives
        replugs: `/dev/serial/by-id/...` (see `ls -l /dev/serial/by-id/`)
        or `/dev/meshtastic` from the bundled udev rule (see
        {option}`services.sovereign-bridge.udevRules`);
        `tcp://host[:4403]` for a radio on the network; or `sim` for the
        built-in simulated radio.

        The unit may open USB serial devices only (ttyUSB, ttyACM). For a
        radio on another kind of serial port allow that as well (the lists
        add up), for example for the Raspberry Pi's GPIO UART (ttyAMA0, or
        ttyS0 on a Pi 3 with Bluetooth on):
        `systemd.services.sovereign-bridge.serviceConfig.DeviceAllow = [ "char-ttyAMA rw" "char-ttyS rw" ];`
      '';
    };

    mqtt = {
      listen = lib.mkOption {
        type = listenAddress;
        default = "127.0.0.1:1883";
        example = "0.0.0.0:1883";
        description = ''
          Address of the embedded MQTT broker, `host:port` with a port from 1
          to 65535 (`[::1]:1883` for IPv6), or `off` to run
          without it (for example with an external broker set in
          {option}`services.sovereign-bridge.settings` as `mqtt-broker`).
          Listening beyond loopback requires
          {option}`services.sovereign-bridge.mqtt.credentialsFile`.
        '';
      };

      credentialsFile = lib.mkOption {
        type = lib.types.nullOr secretFile;
        default = null;
        example = "/run/secrets/mqtt_credentials";
        description = ''
          Users file for the embedded broker (YAML, `users: {name: {password: ...}}`),
          needed to listen beyond loopback. Handed over as a systemd
          credential, like {option}`services.sovereign-bridge.passwordFile`.
        '';
      };
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = ''
        Open the embedded MQTT broker's TCP port in the firewall. Only useful
        when {option}`services.sovereign-bridge.mqtt.listen` is not a
        loopback address.
      '';
    };

    stateDir = lib.mkOption {
      type = lib.types.strMatching "/var/lib/[^/].*";
      default = "/var/lib/sovereign-bridge";
      description = ''
        State directory (queued messages, node database). It must be under
        /var/lib: systemd creates it for the service's dynamic user
        (StateDirectory=) and passes it as $STATE_DIRECTORY. The data itself
        lives in /var/lib/private/, with a symlink at this path.
      '';
    };

    logLevel = lib.mkOption {
      type = lib.types.enum [
        "debug"
        "info"
        "warn"
        "error"
      ];
      default = "info";
      description = "Log level. Logs go to the journal: `journalctl -u sovereign-bridge`.";
    };

    udevRules = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        Install a udev rule for Meshtastic radios on USB: it keeps
        ModemManager from probing them and names the radio `/dev/meshtastic`.
        With more than one matching USB-serial adapter attached, use a
        `/dev/serial/by-id/...` path for
        {option}`services.sovereign-bridge.device` instead.
      '';
    };

    settings = lib.mkOption {
      type = lib.types.submodule { freeformType = settingsFormat.type; };
      default = { };
      example = lib.literalExpression ''
        {
          "mqtt-root" = "msh/EU_868";
          "log-format" = "json";
          "xmpp-server" = "xmpp.example.org:5222";
          "xmpp-format" = "[{short}] {long}: {text}";
          # More rooms, by channel name or index (TOML [[rooms]] tables).
          rooms = [
            { jid = "farm@conference.example.org"; channel = "farm"; nick = "farmbot"; }
            { jid = "ops@conference.example.org"; "channel-index" = 2; }
          ];
        }
      '';
      description = ''
        Further daemon settings, written to a TOML file passed with
        `--config`. The keys are the daemon's long flag names (see
        `sovereign-bridge --help`), so new daemon options need no module
        change; `rooms` is a list of attribute sets (`jid`, `nick`,
        `channel`, `channel-index`), one per extra room. Options the module
        sets itself (device, mqtt-listen, mqtt-credentials, log-level,
        state-dir, jid, room, nick, the password) are not allowed here.
        Never put secrets here: this file is in the world-readable Nix store.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.jid != null -> cfg.passwordFile != null;
        message = "services.sovereign-bridge.passwordFile must be set when services.sovereign-bridge.jid is set.";
      }
      {
        assertion = cfg.jid != null -> (cfg.room != null || hasExtraRooms);
        message = "services.sovereign-bridge.room (or settings.rooms) must be set when services.sovereign-bridge.jid is set.";
      }
      {
        assertion = cfg.room != null -> cfg.jid != null;
        message = "services.sovereign-bridge.room is set but services.sovereign-bridge.jid is not: the bridge needs an XMPP account to join the room.";
      }
      {
        assertion = cfg.jid == null -> xmppOnlyKeys == [ ];
        message = "services.sovereign-bridge.settings sets ${lib.concatStringsSep ", " xmppOnlyKeys}, which need an XMPP account: set services.sovereign-bridge.jid.";
      }
      {
        assertion = listenIsLoopback || cfg.mqtt.credentialsFile != null;
        message = ''
          services.sovereign-bridge.mqtt.listen is not a loopback address, so the
          embedded MQTT broker needs credentials: set
          services.sovereign-bridge.mqtt.credentialsFile, or listen on 127.0.0.1.
        '';
      }
      {
        assertion = clashingKeys == [ ];
        message = ''
          services.sovereign-bridge.settings must not set ${lib.concatStringsSep ", " clashingKeys}:
          use ${
            lib.concatStringsSep ", " (map (k: "services.sovereign-bridge.${reservedKeys.${k}}") clashingKeys)
          } instead. Secrets never belong in settings, which end up in the world-readable Nix store.
        '';
      }
    ];

    warnings =
      lib.optional (cfg.openFirewall && listenIsLoopback)
        "services.sovereign-bridge.openFirewall has no use while services.sovereign-bridge.mqtt.listen is \"${cfg.mqtt.listen}\"."
      ++ lib.optional (cfg.jid == null && cfg.passwordFile != null)
        "services.sovereign-bridge.passwordFile is set but services.sovereign-bridge.jid is not; the password is unused.";

    services.udev.packages = lib.optional cfg.udevRules udevRulesPackage;

    networking.firewall.allowedTCPPorts = lib.optional (
      cfg.openFirewall && !listenIsLoopback && listenPort != null
    ) listenPort;

    systemd.services.sovereign-bridge = {
      description = "SovereignRelay: Meshtastic LoRa mesh <-> MQTT <-> XMPP bridge";
      documentation = [ "https://github.com/jshiffer/lora-xmpp-bridge" ];
      wantedBy = [ "multi-user.target" ];
      # The mesh side works without a network: if it never comes up,
      # network-online.target is still reached once the wait-online service
      # gives up, and the daemon keeps retrying XMPP on its own.
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      # Never give up restarting: an unattended off-grid box must keep trying.
      startLimitIntervalSec = 0;

      serviceConfig =
        {
          Type = if daemonSpeaksNotify then "notify" else "simple";
          ExecStart = "${lib.getExe cfg.package} ${lib.concatStringsSep " " execArgs}";
          LoadCredential =
            lib.optional (cfg.jid != null && cfg.passwordFile != null) "xmpp-password:${cfg.passwordFile}"
            ++ lib.optional (cfg.mqtt.credentialsFile != null) "mqtt-credentials:${cfg.mqtt.credentialsFile}";

          # Restart on everything (crashes, radio unplugged, network gone,
          # watchdog) except exit statuses 77 (EX_NOPERM: the XMPP server
          # rejected the password) and 78 (EX_CONFIG: the configuration can
          # never work). Restarting then would only hammer the server; fix
          # the configuration and the next switch restarts it.
          Restart = "always";
          RestartSec = "10s";
          RestartPreventExitStatus = "77 78";

          DynamicUser = true;
          StateDirectory = lib.removePrefix "/var/lib/" cfg.stateDir;
          StateDirectoryMode = "0700";
          UMask = "0077";

          # The radio: ttyUSB (CP210x, CH340/CH9102, FTDI) and ttyACM (nRF52,
          # ESP32-S3 native USB) nodes are group dialout. PrivateDevices= must
          # stay off: it would hide the radio. The device policy is closed
          # instead. ProtectClock= adds "char-rtc r" to DeviceAllow=, which
          # turns the policy into an allow-list: without the two entries here
          # that alone would lock the radio out. PrivateUsers= stays off:
          # inside a user namespace the dialout group is not mapped.
          SupplementaryGroups = [ "dialout" ];
          PrivateDevices = false;
          DevicePolicy = "closed";
          DeviceAllow = [
            "char-ttyUSB rw"
            "char-ttyACM rw"
          ];

          CapabilityBoundingSet = "";
          AmbientCapabilities = "";
          NoNewPrivileges = true;
          ProtectSystem = "strict";
          ProtectHome = true;
          PrivateTmp = true;
          PrivateMounts = true;
          PrivateIPC = true;
          ProtectKernelTunables = true;
          ProtectKernelModules = true;
          ProtectKernelLogs = true;
          ProtectControlGroups = true;
          ProtectClock = true;
          ProtectHostname = true;
          ProtectProc = "invisible";
          ProcSubset = "pid";
          RestrictAddressFamilies = [
            "AF_UNIX"
            "AF_INET"
            "AF_INET6"
          ];
          RestrictNamespaces = true;
          RestrictRealtime = true;
          RestrictSUIDSGID = true;
          LockPersonality = true;
          MemoryDenyWriteExecute = true;
          RemoveIPC = true;
          SystemCallArchitectures = "native";
          SystemCallFilter = [
            "@system-service"
            "~@privileged @resources"
          ];
          SystemCallErrorNumber = "EPERM";
        }
        // lib.optionalAttrs daemonSpeaksNotify {
          WatchdogSec = watchdogSec;
          NotifyAccess = "main";
        };
    };
  };
}
