# Development shell, without flakes: `nix-shell` (or `nix develop` with them).
#
# Go, protoc and protoc-gen-go for the code, Prosody and mosquitto so the
# integration tests run, and a `sovereign-bridge` command that builds the
# working tree and runs it:
#
#   nix-shell
#   sovereign-bridge -j "your_jid@xmpp.org" --password-file ./xmpp_password \
#     -r "your_room@conference.xmpp.org" -n "meshbridge"
#   go test ./...
{
  pkgs ? import <nixpkgs> { },
}:

let
  # go.mod asks for Go 1.26: the default Go from nixpkgs 26.05 on, else a
  # separate go_1_26 where this nixpkgs has one (NixOS 25.11 got it as a
  # backport).
  go =
    if pkgs.lib.versionAtLeast pkgs.go.version "1.26" then
      pkgs.go
    else
      pkgs.go_1_26 or (throw ''
        go.mod needs Go 1.26 or newer; this nixpkgs has Go ${pkgs.go.version} and no go_1_26.
        On NixOS 25.11, update the channel (25.11 got go_1_26 as a backport).
        Or use nixpkgs 26.05 or newer: `nix develop` (the flake pins it), or
        nix-shell -I nixpkgs=channel:nixos-26.05
      '');

  # Builds the checkout the shell was entered from (cached by Go between
  # runs) and runs it with the given arguments.
  sovereign-bridge-dev = pkgs.writeShellScriptBin "sovereign-bridge" ''
    set -euo pipefail
    src="''${SOVEREIGN_BRIDGE_SRC:?enter the shell from the repository root}"
    bin="''${XDG_CACHE_HOME:-$HOME/.cache}/sovereign-bridge/sovereign-bridge"
    mkdir -p "$(dirname "$bin")"
    version="$(cat "$src/VERSION" 2>/dev/null || echo 0.0.0)-dev"
    ${go}/bin/go -C "$src" build -o "$bin" -ldflags "-X main.version=$version" ./cmd/sovereign-bridge
    exec "$bin" "$@"
  '';
in
pkgs.mkShell {
  packages = [
    go
    pkgs.gopls
    pkgs.protobuf
    pkgs.protoc-gen-go
    pkgs.prosody
    pkgs.mosquitto
    pkgs.socat
    pkgs.git
    sovereign-bridge-dev
  ];

  shellHook = ''
    export SOVEREIGN_BRIDGE_SRC="''${SOVEREIGN_BRIDGE_SRC:-$PWD}"
  '';
}
