# Build the bridge without flakes:
#
#   nix-build                 # result/bin/sovereign-bridge
#   nix-build -A tests.go     # the Go test suite, run inside the Nix build
#   nix-build -A tests.vm     # the NixOS VM test (needs KVM)
#
# Uses the nixpkgs on NIX_PATH (<nixpkgs>) unless one is passed in.
{
  pkgs ? import <nixpkgs> { },
}:

let
  sovereign-bridge = pkgs.callPackage ./nixos/package.nix { };
in
sovereign-bridge.overrideAttrs (old: {
  passthru = (old.passthru or { }) // {
    tests = {
      go = sovereign-bridge.override { doCheck = true; };
      vm = import ./nixos/tests/sovereign-bridge.nix {
        inherit pkgs;
        package = sovereign-bridge;
      };
    };
  };
})
