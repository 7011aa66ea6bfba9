package mesh

//lint:file-ignore SA1019 LongSlow and VeryLongSlow are deprecated presets, but radios still run them and their airtime must be known.

import "github.com/jshiffer/lora-xmpp-bridge/meshpb"

// presetNames are the firmware's display names of the modem presets, which
// are also the names of unnamed primary channels.
var presetNames = map[meshpb.Config_LoRaConfig_ModemPreset]string{
	meshpb.Config_LoRaConfig_LONG_FAST:      "LongFast",
	meshpb.Config_LoRaConfig_LONG_SLOW:      "LongSlow",
	meshpb.Config_LoRaConfig_VERY_LONG_SLOW: "VLongSlow",
	meshpb.Config_LoRaConfig_MEDIUM_SLOW:    "MediumSlow",
	meshpb.Config_LoRaConfig_MEDIUM_FAST:    "MediumFast",
	meshpb.Config_LoRaConfig_SHORT_SLOW:     "ShortSlow",
	meshpb.Config_LoRaConfig_SHORT_FAST:     "ShortFast",
	meshpb.Config_LoRaConfig_LONG_MODERATE:  "LongMod",
	meshpb.Config_LoRaConfig_SHORT_TURBO:    "ShortTurbo",
	meshpb.Config_LoRaConfig_LONG_TURBO:     "LongTurbo",
	meshpb.Config_LoRaConfig_LITE_FAST:      "LiteFast",
	meshpb.Config_LoRaConfig_LITE_SLOW:      "LiteSlow",
	meshpb.Config_LoRaConfig_NARROW_FAST:    "NarrowFast",
	meshpb.Config_LoRaConfig_NARROW_SLOW:    "NarrowSlow",
	meshpb.Config_LoRaConfig_TINY_FAST:      "TinyFast",
	meshpb.Config_LoRaConfig_TINY_SLOW:      "TinySlow",
	meshpb.Config_LoRaConfig_MEDIUM_TURBO:   "MediumTurbo",
}

// PresetName is the display name of a modem preset ("LongFast"), or
// "Invalid" for a value the firmware does not know, as the firmware says.
func PresetName(p meshpb.Config_LoRaConfig_ModemPreset) string {
	if n, ok := presetNames[p]; ok {
		return n
	}
	return "Invalid"
}
