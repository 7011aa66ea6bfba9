{
  description = "SovereignRelay: bridge between a Meshtastic LoRa mesh, MQTT and an XMPP chat room";

  # Go 1.26 (go.mod) needs nixpkgs 26.05 or newer.
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

      # The module finds the package by itself (pkgs.sovereign-bridge when the
      # overlay is applied, else built from this flake's source with the
      # system's nixpkgs).
      nixosModules.default = ./nixos/module.nix;
      nixosModules.sovereign-bridge = ./nixos/module.nix;

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
      });
    };
}
