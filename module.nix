# NixOS module, importable by path without flakes:
#
#   imports = [ /path/to/lora-xmpp-bridge/module.nix ];
#
# The module itself, with all its options, is nixos/module.nix.
{
  imports = [ ./nixos/module.nix ];
}
