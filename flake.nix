{
  description = "SovereignRelay: bridge between a Meshtastic LoRa mesh, MQTT and an XMPP chat room";

  # go.mod asks for Go 1.26: the default Go from nixpkgs 26.05 on (25.11
  # has it only as the backported go_1_26, which nixos/package.nix also uses).
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      overlays.default = final: prev: {
        sovereign-bridge = final.callPackage ./nixos/package.nix { };
      };

      packages = forAllSystems (pkgs: rec {
        sovereign-bridge = pkgs.callPackage ./nixos/package.nix { };
        default = sovereign-bridge;
      });

      # The NixOS module. Its package: pkgs.sovereign-bridge when the overlay
      # is applied (built with the system's nixpkgs, which then needs Go
      # 1.26: NixOS 26.05 or newer, or 25.11 with its go_1_26 backport);
      # else this flake's own package, built with the nixpkgs pinned above,
      # so that a NixOS 25.05 or 25.11 system works too.
      # services.sovereign-bridge.package overrides both.
      nixosModules.default =
        { lib, pkgs, ... }:
        {
          key = "sovereign-bridge-flake-module";
          _file = "${toString ./flake.nix}#nixosModules.default";
          imports = [ ./nixos/module.nix ];
          services.sovereign-bridge.package = lib.mkDefault (
            pkgs.sovereign-bridge
              or self.packages.${pkgs.stdenv.hostPlatform.system}.default
              or (pkgs.callPackage ./nixos/package.nix { })
          );
        };
      nixosModules.sovereign-bridge = self.nixosModules.default;

      devShells = forAllSystems (pkgs: {
        default = import ./shell.nix { inherit pkgs; };
      });

      checks = forAllSystems (pkgs: {
        package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        go-tests = self.packages.${pkgs.stdenv.hostPlatform.system}.default.override { doCheck = true; };
        vm = import ./nixos/tests/sovereign-bridge.nix {
          inherit pkgs;
          package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };
        # services.sovereign-bridge.settings goes through pkgs.formats.toml:
        # rooms must come out as an array of tables with integer fields.
        settings-toml =
          let
            file = (pkgs.formats.toml { }).generate "sovereign-bridge-settings.toml" {
              "xmpp-server" = "xmpp.example.org:5222";
              "xmpp-max-parts" = 4;
              "mqtt-encrypt" = false;
              rooms = [
                {
                  jid = "farm@conference.example.org";
                  channel = "farm";
                  nick = "farmbot";
                }
                {
                  jid = "ops@conference.example.org";
                  "channel-index" = 2;
                }
              ];
            };
          in
          pkgs.runCommand "sovereign-bridge-settings-toml" { nativeBuildInputs = [ pkgs.python3 ]; } ''
            cat ${file}
            python3 - ${file} <<'EOF'
            import sys, tomllib
            with open(sys.argv[1], "rb") as f:
                c = tomllib.load(f)
            assert c["xmpp-max-parts"] == 4 and c["mqtt-encrypt"] is False, c
            rooms = c["rooms"]
            assert isinstance(rooms, list) and len(rooms) == 2, rooms
            assert rooms[0] == {"jid": "farm@conference.example.org", "channel": "farm", "nick": "farmbot"}, rooms
            assert rooms[1]["channel-index"] == 2 and type(rooms[1]["channel-index"]) is int, rooms
            EOF
            touch $out
          '';
      });
    };
}
