package serialgw

import (
	"fmt"
	"strings"

	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// radioState is what the handshake taught us about the radio.
type radioState struct {
	myNum       uint32
	rebootCount uint32
	self        *meshpb.User
	firmware    string
	hwModel     meshpb.HardwareModel
	lora        *meshpb.Config_LoRaConfig
	mqtt        *meshpb.ModuleConfig_MQTTConfig
	channels    [8]*meshpb.Channel
}

func (r *radioState) gatewayID() string { return mesh.NodeID(r.myNum) }

func (r *radioState) region() string {
	if r.lora == nil {
		return ""
	}
	return r.lora.GetRegion().String()
}

// hopLimit is the radio's configured hop limit, used for every packet we
// send so the firmware never has to guess (0 would mean "neighbours only").
func (r *radioState) hopLimit() uint32 {
	if h := r.lora.GetHopLimit(); h > 0 && h <= 7 {
		return h
	}
	return 3
}

// presetName is the display name of the LoRa preset, which is also the name
// of a primary channel left unnamed.
func (r *radioState) presetName() string {
	if r.lora != nil && !r.lora.GetUsePreset() && r.lora.GetBandwidth() != 0 {
		return "Custom"
	}
	return mesh.PresetName(r.lora.GetModemPreset())
}

// channelName is the effective name of the channel at index: its own name,
// or the preset name for an unnamed primary channel.
func (r *radioState) channelName(index uint32) (string, bool) {
	if index >= uint32(len(r.channels)) || r.channels[index] == nil || r.channels[index].GetRole() == meshpb.Channel_DISABLED {
		return "", false
	}
	if name := r.channels[index].GetSettings().GetName(); name != "" {
		return name, true
	}
	return r.presetName(), true
}

// channelUplink reports whether the channel at index has MQTT uplink
// enabled in the radio's settings.
func (r *radioState) channelUplink(index uint32) bool {
	return index < uint32(len(r.channels)) && r.channels[index].GetSettings().GetUplinkEnabled()
}

// channelIndex finds an enabled channel by effective name (case-insensitive);
// "" names the primary channel.
func (r *radioState) channelIndex(name string) (uint32, error) {
	if name == "" {
		return 0, nil
	}
	for i := range r.channels {
		if n, ok := r.channelName(uint32(i)); ok && strings.EqualFold(n, name) {
			return uint32(i), nil
		}
	}
	return 0, fmt.Errorf("no channel named %q on the radio", name)
}

// channelKey is the AES key of the channel at index, nil if unencrypted.
// A secondary channel with no key of its own uses the primary's.
func (r *radioState) channelKey(index uint32) ([]byte, error) {
	psk := r.channels[index].GetSettings().GetPsk()
	if len(psk) == 0 && r.channels[index].GetRole() == meshpb.Channel_SECONDARY && r.channels[0] != nil {
		psk = r.channels[0].GetSettings().GetPsk()
	}
	return mesh.ExpandPSK(psk)
}

// proxyActive reports whether the radio publishes MQTT itself through us
// (client proxy mode), in which case we pass its messages through instead of
// publishing copies of our own.
func (r *radioState) proxyActive() bool {
	return r.mqtt.GetEnabled() && r.mqtt.GetProxyToClientEnabled()
}

// info is the radio's retained record; meshName is the operator's name
// for the mesh it is on.
func (r *radioState) info(root, meshName string) topics.RadioRecord {
	in := topics.RadioRecord{
		ID: r.gatewayID(), Num: r.myNum, LongName: r.self.GetLongName(), ShortName: r.self.GetShortName(),
		Firmware: r.firmware, HWModel: r.hwModel.String(), Region: r.region(), Preset: r.lora.GetModemPreset().String(),
		HopLimit: r.hopLimit(), RebootCount: r.rebootCount, Root: root, Proxy: r.proxyActive(), Mesh: meshName,
	}
	for i, c := range r.channels {
		name, ok := r.channelName(uint32(i))
		if !ok {
			continue
		}
		in.Channels = append(in.Channels, topics.ChannelRecord{
			Index: uint32(i), Name: name, Role: c.GetRole().String(),
			Uplink: c.GetSettings().GetUplinkEnabled(), Downlink: c.GetSettings().GetDownlinkEnabled(),
		})
	}
	return in
}
