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
# (go mod vendor over the files of moduleSource below, then the NAR hash)
# and prints it when this one is stale.
{
  lib,
  go,
  buildGoModule,
  # go.mod asks for Go 1.26. nixpkgs 26.05 and later have it as the default
  # Go. Older releases may carry it as a separate attribute: NixOS 25.11
  # got go_1_26 as a backport (its default Go stays 1.25). Both are looked
  # at only when the default Go is too old.
  buildGo126Module ? null,
  go_1_26 ? null,
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
    else if go_1_26 != null then
      buildGoModule.override { go = go_1_26; }
    else
      throw ''
        sovereign-bridge needs Go 1.26 or newer (go.mod), but this nixpkgs has
        Go ${go.version} as its default and neither go_1_26 nor buildGo126Module.
        NixOS 26.05 and newer have Go 1.26 as the default. NixOS 25.11 got
        go_1_26 as a backport (nixpkgs pull request 490463), so on 25.11 first
        update the channel:
          sudo nix-channel --update
        With flakes, nixosModules.default builds the package with the
        flake's own pinned nixpkgs. Otherwise add a newer channel and take the
        package from it, for example
          sudo nix-channel --add https://nixos.org/channels/nixos-26.05 nixos-26.05
          sudo nix-channel --update
        and in configuration.nix
          services.sovereign-bridge.package =
            (import <nixos-26.05> { }).callPackage /etc/nixos/lora-xmpp-bridge/nixos/package.nix { };
      '';

  version = lib.fileContents ../VERSION;

  # Sources, as file sets: only what the Go toolchain reads, so that editing
  # README.md, dist/, nixos/, .ci/, the Nix files or a test neither changes
  # the source hash nor rebuilds the binary. The module has no //go:embed
  # files, no cgo or assembly sources, and takes its version from VERSION
  # at evaluation time (ldflags below), so .go files, go.mod and go.sum are
  # all it needs.
  fs = lib.fileset;
  root = ../.;
  # Never part of the module: the Git directory, and a vendor/ left behind
  # by `go mod vendor` (Nix makes its own from vendorHash).
  notModule = fs.unions [
    (fs.maybeMissing ../.git)
    (fs.maybeMissing ../vendor)
  ];
  goFiles = fs.difference (fs.fileFilter (file: lib.hasSuffix ".go" file.name) root) notModule;
  testFiles = fs.fileFilter (file: lib.hasSuffix "_test.go" file.name) root;
  goMod = [
    ../go.mod
    ../go.sum
  ];

  # What the binary is built from: go.mod, go.sum and the non-test Go files.
  buildSource = fs.toSource {
    inherit root;
    fileset = fs.unions (goMod ++ [ (fs.difference goFiles testFiles) ]);
  };
  # What `go mod vendor` runs on: with the tests, whose imports belong in
  # vendor/ as well. Without them the vendor directory, and so vendorHash,
  # would differ between the plain build and the test run.
  moduleSource = fs.toSource {
    inherit root;
    fileset = fs.unions (goMod ++ [ goFiles ]);
  };
  # The test run (doCheck): the module with its tests, plus the files the
  # tests read. A new testdata directory has to be added here. The example
  # Node-RED flow is checked against the code it talks to.
  checkSource = fs.toSource {
    inherit root;
    fileset = fs.unions (
      goMod
      ++ [
        goFiles
        ../hass/testdata
        ../mesh/testdata
        ../nixos/testdata
        ../dist/node-red-flow.json
      ]
    );
  };
in
goBuilder {
  pname = "sovereign-bridge";
  inherit version doCheck;

  src = if doCheck then checkSource else buildSource;

  vendorHash = "sha256-fMB6/S9w8r3aTE+vDD7AqUe++9MFRg1jXIiqPTz09N0=";
  # One vendor directory for the build and the test run (see moduleSource).
  # It is a fixed-output derivation: a changed test file changes its
  # recipe but not its output, which Nix then does not fetch again.
  overrideModAttrs = _: { src = moduleSource; };

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
    maintainers = [ ];
    platforms = lib.platforms.linux;
  };
}
