# The sovereign-bridge package, built with buildGoModule from this checkout.
#
#   nix-build                      # default.nix, no flakes needed
#   nix build .#default            # with flakes
#
# Go module dependencies are fetched by Nix as one fixed-output derivation
# whose hash is vendorHash below; the build itself runs without network.
#
# Refreshing vendorHash after go.mod or go.sum changed: build once; Nix stops
# with "hash mismatch in fixed-output derivation ... got: sha256-..."; put the
# "got:" value here. .ci/nix-checks computes the same value without Nix
# (go mod vendor + NAR hash) and prints it when this one is stale.
{
  lib,
  go,
  buildGoModule,
  # go.mod asks for Go 1.26. The default Go when it is that new (nixpkgs
  # 26.05 and later), else nixpkgs' separate Go 1.26 where it has one.
  # NixOS 25.05 and 25.11 have neither: see the error below.
  buildGo126Module ? null,
  mosquitto ? null,
  # Run the whole Go test suite in the build (the flake's checks do).
  # Off by default, so that a slow or timing-sensitive test cannot stop a
  # deployment on a small board.
  doCheck ? false,
}:

let
  goBuilder =
    if lib.versionAtLeast go.version "1.26" then
      buildGoModule
    else if buildGo126Module != null then
      buildGo126Module
    else
      throw ''
        sovereign-bridge needs Go 1.26 or newer (go.mod), but this nixpkgs has
        Go ${go.version} and no buildGo126Module. Build it with nixpkgs 26.05 or
        newer: with flakes, nixosModules.default does that by itself; without,
        add a newer channel and take the package from it, for example
          sudo nix-channel --add https://nixos.org/channels/nixos-26.05 nixos-26.05
          sudo nix-channel --update
        and in configuration.nix
          services.sovereign-bridge.package =
            (import <nixos-26.05> { }).callPackage /etc/nixos/lora-xmpp-bridge/nixos/package.nix { };
      '';

  root = ../.;
  version = lib.fileContents ../VERSION;

  # The Go sources only: the Nix files, the unit files and the CI scripts do
  # not change the binary, so editing them does not rebuild it.
  src = lib.cleanSourceWith {
    name = "sovereign-bridge-source";
    src = lib.cleanSource root;
    filter =
      path: type:
      let
        rel = lib.removePrefix (toString root + "/") (toString path);
      in
      !(
        lib.elem rel [
          "dist"
          ".ci"
          "nixos/tests"
          "flake.lock"
          "vendor"
        ]
        || (type != "directory" && lib.hasSuffix ".nix" rel)
      );
  };
in
goBuilder {
  pname = "sovereign-bridge";
  inherit version src doCheck;

  vendorHash = "sha256-fMB6/S9w8r3aTE+vDD7AqUe++9MFRg1jXIiqPTz09N0=";

  subPackages = [ "cmd/sovereign-bridge" ];

  ldflags = [
    "-s"
    "-w"
    "-X main.version=${version}"
  ];

  # mosquitto's clients drive the broker integration tests; tests that need
  # Prosody skip themselves here (run them in the dev shell: nix-shell).
  nativeCheckInputs = lib.optional (mosquitto != null) mosquitto;

  # subPackages limits what is built and installed; test every package.
  checkPhase = ''
    runHook preCheck
    export HOME=$TMPDIR
    export GOFLAGS=''${GOFLAGS//-trimpath/}
    go test -vet=off -count=1 -p "$NIX_BUILD_CORES" ./...
    runHook postCheck
  '';

  meta = {
    description = "Bridge between a Meshtastic LoRa mesh, MQTT and an XMPP multi-user chat";
    homepage = "https://github.com/jshiffer/lora-xmpp-bridge";
    mainProgram = "sovereign-bridge";
    platforms = lib.platforms.linux;
  };
}
