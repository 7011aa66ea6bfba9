# NixOS VM test of the sovereign-bridge module.
#
# It needs nixpkgs and KVM, so the repository's own CI (.ci/nix-checks) only
# parses this file; it has not been run there. Run it with
#
#   nix build .#checks.x86_64-linux.vm -L          # flakes
#   nix-build -A tests.vm                          # without flakes
#
# Two machines:
#
# bridge: Prosody with a MUC, the bridge from the module with the built-in
#   simulated radio (device = "sim") and a password file made at run time.
#   Checks that the service starts on boot and keeps retrying while the
#   password file is missing; that it joins the room; that a text from the
#   mesh reaches the room and a text said in the room reaches the radio; that
#   the password is absent from the unit, the process list, the daemon's
#   environment and the journal; and that systemd-analyze security rates the
#   unit at 2.0 or below.
#
# radio: the bridge from the module on a real USB serial device, an FTDI
#   adapter that QEMU emulates (/dev/ttyUSB0, group dialout). Checks that
#   the sandbox (DeviceAllow, dialout, ProtectClock) lets the daemon open it,
#   that a pseudo-terminal at a ttyUSB-like path opens too (systemd always
#   lets ptys through a closed device policy), and that a serial port outside
#   the allow-list is refused although its permissions would allow it.
#
# How the mesh side is observed: everything the radio hears is published on
# the embedded broker (sovereign/mesh/rx and the Meshtastic topics); the XMPP
# gateway asks the radio for sends on sovereign/mesh/tx/<gateway id>, and the
# radio link reports each request's outcome on sovereign/mesh/result.
# mesh-check.py reads a log of those topics; room-client.py is the second
# occupant of the room.
{
  pkgs ? import <nixpkgs> { },
  # The package under test; null means the module's default.
  package ? null,
}:

let
  inherit (pkgs) lib;

  domain = "example.test";
  mucDomain = "conference.${domain}";
  room = "mesh@${mucDomain}";
  version = lib.fileContents ../../VERSION;
  packageOption = lib.optionalAttrs (package != null) { inherit package; };

  certs = pkgs.runCommand "sovereign-bridge-test-certs" { nativeBuildInputs = [ pkgs.openssl ]; } ''
    mkdir -p $out
    openssl req -x509 -newkey rsa:2048 -nodes -days 36500 \
      -keyout $out/key.pem -out $out/cert.pem -subj "/CN=${domain}" \
      -addext "subjectAltName = DNS:${domain},DNS:${mucDomain}"
  '';

  roomClient = pkgs.writeShellScriptBin "room-client" ''
    export ROOM_CLIENT_JID="''${ROOM_CLIENT_JID:-alice@${domain}}"
    export ROOM_CLIENT_PASSWORD="''${ROOM_CLIENT_PASSWORD:-alice-test-pw}"
    export ROOM_CLIENT_ROOM="''${ROOM_CLIENT_ROOM:-${room}}"
    export ROOM_CLIENT_SERVER="''${ROOM_CLIENT_SERVER:-${domain}:5222}"
    # Also under systemd-run, which does not pass the login environment.
    export SSL_CERT_FILE="''${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
    exec ${pkgs.python3.withPackages (ps: [ ps.slixmpp ])}/bin/python3 ${./room-client.py} "$@"
  '';

  meshCheck = pkgs.writeShellScriptBin "mesh-check" ''
    exec ${pkgs.python3}/bin/python3 ${./mesh-check.py} "$@"
  '';

  # Logs every message on the bridge's broker: "<topic> <payload in hex>".
  busLog = pkgs.writeShellScriptBin "bus-log" ''
    exec ${pkgs.mosquitto}/bin/mosquitto_sub -h 127.0.0.1 -p 1883 \
      -t 'msh/#' -t 'sovereign/#' -F '%t %x' >>"$1"
  '';

  # Opens a serial device the way the daemon does (read-write, no
  # controlling tty, non-blocking), as a unit with the daemon's sandbox.
  openCheck = pkgs.writeScript "serial-open-check" ''
    #!${pkgs.python3}/bin/python3
    import os, sys
    os.close(os.open(sys.argv[1], os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK))
    print("opened", sys.argv[1])
  '';
in
pkgs.testers.runNixOSTest {
  name = "sovereign-bridge";

  nodes.bridge =
    { pkgs, ... }:
    {
      imports = [ ../module.nix ];

      virtualisation.memorySize = 1024;
      networking.extraHosts = "127.0.0.1 ${domain} ${mucDomain}";
      security.pki.certificateFiles = [ "${certs}/cert.pem" ];

      services.prosody = {
        enable = true;
        xmppComplianceSuite = false;
        ssl = {
          cert = "${certs}/cert.pem";
          key = "${certs}/key.pem";
        };
        virtualHosts.test = {
          inherit domain;
          enabled = true;
          ssl = {
            cert = "${certs}/cert.pem";
            key = "${certs}/key.pem";
          };
        };
        muc = [
          {
            domain = mucDomain;
            roomLocking = false;
          }
        ];
      };

      services.sovereign-bridge = {
        enable = true;
        jid = "bridge@${domain}";
        # Created by the test script, after boot.
        passwordFile = "/run/secrets/xmpp_password";
        inherit room;
        nick = "meshbridge";
        device = "sim";
        logLevel = "debug";
        # No DNS in the VM: skip the SRV lookup. Also exercises --config.
        settings."xmpp-server" = "${domain}:5222";
      } // packageOption;

      environment.systemPackages = [
        roomClient
        meshCheck
        busLog
        pkgs.mosquitto
      ];
    };

  nodes.radio =
    { config, pkgs, ... }:
    {
      imports = [ ../module.nix ];

      # A USB serial adapter (QEMU's usb-serial is an FTDI FT232) with
      # nothing on the far side: enough to open it.
      virtualisation.qemu.options = [
        "-device qemu-xhci,id=radio-usb"
        "-chardev null,id=radio-line"
        "-device usb-serial,bus=radio-usb.0,chardev=radio-line"
      ];
      boot.kernelModules = [ "ftdi_sio" ];

      services.sovereign-bridge = {
        enable = true;
        device = "/dev/ttyUSB0";
      } // packageOption;

      # serial-open-check@<escaped path>.service: the daemon's own sandbox,
      # running openCheck on the device instead of the daemon.
      systemd.services."serial-open-check@" = {
        description = "Open %I inside the sandbox of sovereign-bridge.service";
        serviceConfig =
          removeAttrs config.systemd.services.sovereign-bridge.serviceConfig [
            "ExecStart"
            "Type"
            "Restart"
            "RestartSec"
            "RestartPreventExitStatus"
            "LoadCredential"
            "StateDirectory"
            "StateDirectoryMode"
            "WatchdogSec"
            "NotifyAccess"
          ]
          // {
            Type = "oneshot";
            ExecStart = "${openCheck} /%I";
          };
      };

      environment.systemPackages = [
        pkgs.socat
        pkgs.python3
      ];
    };

  testScript =
    { nodes, ... }:
    ''
      import re

      start_all()

      def unit_for(machine, path):
          return machine.succeed(
              f"systemd-escape --path --template=serial-open-check@.service {path}"
          ).strip()

      with subtest("radio: version stamped into the binary"):
          radio.succeed(
              "${nodes.radio.services.sovereign-bridge.package}/bin/sovereign-bridge --version"
              " | grep -F '${version}'"
          )

      with subtest("radio: the emulated USB adapter is a dialout ttyUSB with a stable name"):
          radio.wait_for_unit("multi-user.target")
          radio.wait_until_succeeds("test -c /dev/ttyUSB0", timeout=60)
          radio.succeed('test "$(stat -c %G /dev/ttyUSB0)" = dialout')
          radio.succeed("readlink -f /dev/serial/by-path/* | grep -qx /dev/ttyUSB0")
          print(radio.succeed("ls -l /dev/serial/by-id/ /dev/serial/by-path/ || true"))
          radio.succeed("udevadm verify /etc/udev/rules.d/70-sovereign-bridge-radio.rules")

      with subtest("radio: the sandbox lets the daemon open the USB radio"):
          # The daemon holds the port exclusively while it runs.
          radio.succeed("systemctl stop sovereign-bridge.service")
          radio.succeed(f"systemctl start '{unit_for(radio, '/dev/ttyUSB0')}'")
          # The daemon itself, on the same device (ProtectClock= is on).
          radio.succeed("systemctl start sovereign-bridge.service")
          radio.wait_until_succeeds(
              "ls -l /proc/$(systemctl show -P MainPID sovereign-bridge.service)/fd"
              " | grep -q /dev/ttyUSB0",
              timeout=120,
          )

      with subtest("radio: a pty at a ttyUSB-like path opens as well"):
          radio.succeed(
              "systemd-run --unit=fake-radio socat pty,link=/dev/ttyUSB-sim,raw,echo=0 pty,raw,echo=0"
          )
          radio.wait_until_succeeds("test -e /dev/ttyUSB-sim")
          radio.succeed(
              'chgrp dialout "$(readlink -f /dev/ttyUSB-sim)"'
              ' && chmod 0660 "$(readlink -f /dev/ttyUSB-sim)"'
          )
          radio.succeed(f"systemctl start '{unit_for(radio, '/dev/ttyUSB-sim')}'")

      with subtest("radio: a serial port outside DeviceAllow is refused"):
          # An 8250 UART node (major 4, like the Pi's ttyS0) that file
          # permissions alone would let the daemon open.
          radio.succeed(
              "mknod -m 0660 /dev/ttyS-radio c 4 65 && chgrp dialout /dev/ttyS-radio"
          )
          unit = unit_for(radio, "/dev/ttyS-radio")
          radio.fail(f"systemctl start '{unit}'")
          radio.succeed(f"journalctl -u '{unit}' | grep -q 'Operation not permitted'")

      with subtest("bridge: enabled at boot, never locked out, keeps retrying without its password"):
          bridge.wait_for_unit("prosody.service")
          bridge.succeed("systemctl is-enabled sovereign-bridge.service")
          props = bridge.succeed(
              "systemctl show -p Type -p Restart -p RestartPreventExitStatus"
              " -p StartLimitIntervalUSec -p DynamicUser -p PrivateDevices -p DevicePolicy"
              " sovereign-bridge.service"
          ).splitlines()
          for expected in [
              "Type=notify",
              "Restart=always",
              "RestartPreventExitStatus=77 78",
              "StartLimitIntervalUSec=0",
              "DynamicUser=yes",
              "PrivateDevices=no",
              "DevicePolicy=closed",
          ]:
              assert expected in props, f"{expected} not in {props}"
          bridge.wait_until_succeeds(
              'test "$(systemctl show -P NRestarts sovereign-bridge.service)" -ge 2',
              timeout=120,
          )

      with subtest("bridge: accounts, and the password file made at run time"):
          bridge.succeed(
              "install -d -m 0700 /root/staging"
              " && (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=\\n' > /root/staging/xmpp_password)"
          )
          bridge.succeed('prosodyctl register bridge ${domain} "$(cat /root/staging/xmpp_password)"')
          bridge.succeed("prosodyctl register alice ${domain} alice-test-pw")
          bridge.succeed(
              "install -d -m 0755 /run/secrets"
              " && install -m 0600 /root/staging/xmpp_password /run/secrets/xmpp_password"
          )

      with subtest("bridge: the service runs and joins the room"):
          bridge.wait_for_unit("sovereign-bridge.service")
          bridge.wait_for_open_port(1883)
          bridge.succeed(
              "systemd-run --unit=bus-log -p Restart=always -p RestartSec=1 $(command -v bus-log) /tmp/bus.log"
          )
          bridge.succeed(
              "systemd-run --unit=room-listen -p Restart=always -p RestartSec=2"
              " $(command -v room-client) listen /tmp/room.log"
          )
          bridge.wait_until_succeeds("mesh-check in-room meshbridge /tmp/room.log", timeout=180)

      with subtest("bridge: a text from the mesh reaches the room"):
          # The simulated radio's nodes say something every few seconds.
          bridge.wait_until_succeeds(
              "mesh-check mesh-text-in-room /tmp/bus.log /tmp/room.log", timeout=240
          )

      with subtest("bridge: a text from the room reaches the radio"):
          text = "Hello mesh, this is the room (vm test 4711)"
          bridge.succeed(f"room-client say '{text}'")
          bridge.wait_until_succeeds(f"mesh-check radio-took '{text}' /tmp/bus.log", timeout=120)
          bridge.succeed("systemctl is-active sovereign-bridge.service")

      with subtest("bridge: the password is nowhere but in its file"):
          pw = "/run/secrets/xmpp_password"
          bridge.succeed(f"test -s {pw} && grep -qF -f {pw} {pw}")
          pid = bridge.succeed("systemctl show -P MainPID sovereign-bridge.service").strip()
          assert pid != "0", "sovereign-bridge is not running"
          for what, cmd in [
              ("unit file", "systemctl cat sovereign-bridge.service"),
              ("unit properties", "systemctl show sovereign-bridge.service"),
              ("process list", "ps -eww -o args="),
              ("daemon's environment", f"tr '\\0' '\\n' < /proc/{pid}/environ"),
              ("daemon's command line", f"tr '\\0' '\\n' < /proc/{pid}/cmdline"),
              ("journal", "journalctl -b --no-pager -o cat"),
          ]:
              count = bridge.succeed(f"{cmd} | grep -cF -f {pw} || true").strip()
              assert count == "0", f"the XMPP password shows in the {what}"
          bridge.succeed(
              f"tr '\\0' '\\n' < /proc/{pid}/cmdline"
              " | grep -qx -- '--password-file=/run/credentials/sovereign-bridge.service/xmpp-password'"
          )

      with subtest("bridge: systemd-analyze security rates the unit at 2.0 or below"):
          out = bridge.succeed("systemd-analyze security --no-pager sovereign-bridge.service")
          m = re.search(r"Overall exposure level for sovereign-bridge.service: ([0-9.]+)", out)
          assert m, out
          print(f"exposure: {m.group(1)}")
          assert float(m.group(1)) <= 2.0, out
    '';
}
