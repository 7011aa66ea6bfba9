package hass

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"maps"
	"math"
	"strings"

	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/topics"
)

// Home Assistant components the publisher uses.
const (
	componentSensor        = "sensor"
	componentBinarySensor  = "binary_sensor"
	componentDeviceTracker = "device_tracker"
	componentText          = "text"
)

// Identifiers: a mesh node's device is "meshtastic_<hex id>", a radio
// side's "sovereign_bridge_<hex id>", an XMPP side's
// "sovereign_xmpp_<jid>_<hash>"; the discovery topics' node_id level is
// "sovereign_<hex id>", "sovereign_bridge_<hex id>" and the XMPP side's
// device id, so everything this bridge announced can be told from others'
// by its topic.
func nodeDeviceID(id string) string   { return "meshtastic_" + strings.TrimPrefix(id, "!") }
func nodeObjectID(id string) string   { return "sovereign_" + strings.TrimPrefix(id, "!") }
func bridgeDeviceID(id string) string { return "sovereign_bridge_" + strings.TrimPrefix(id, "!") }

// xmppDeviceID is an XMPP side's device id: its bare JID with every
// character outside what a topic level of discovery may hold
// ([a-zA-Z0-9_-]) made "_", at most 64 of them, and a hash of the whole
// JID, so that JIDs alike there stay apart: bridge@example.org is
// sovereign_xmpp_bridge_example_org_5d0803ae.
func xmppDeviceID(jid string) string {
	var b strings.Builder
	for _, r := range jid {
		if b.Len() >= 64 {
			break
		}
		if r == '_' || r == '-' || ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z') || ('0' <= r && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	h := fnv.New32a()
	h.Write([]byte(jid))
	return fmt.Sprintf("sovereign_xmpp_%s_%08x", b.String(), h.Sum32())
}

// origin names the bridge in every discovery payload, for Home
// Assistant's log.
func origin() map[string]any {
	return map[string]any{"name": "SovereignRelay", "support_url": "https://github.com/jshiffer/lora-xmpp-bridge"}
}

// entity is one entity of a device: its component, its object id within
// the device and its component's keys.
type entity struct {
	component, key string
	fields         map[string]any
}

// discoveryTopic is <prefix>/<component>/<node_id>/<object_id>/config.
func (s *state) discoveryTopic(component, nodeID, key string) string {
	return s.cfg.Prefix + "/" + component + "/" + nodeID + "/" + key + "/config"
}

// configs renders a device's entities as discovery payloads by topic.
func (s *state) configs(nodeID string, device map[string]any, extra map[string]any, entities []entity) map[string][]byte {
	out := make(map[string][]byte, len(entities))
	for _, e := range entities {
		m := maps.Clone(e.fields)
		maps.Copy(m, extra)
		m["unique_id"] = nodeID + "_" + e.key
		m["device"] = device
		m["origin"] = origin()
		b, err := json.Marshal(m)
		if err != nil {
			s.log.Error("encoding a discovery config", "entity", m["unique_id"], "err", err)
			continue
		}
		out[s.discoveryTopic(e.component, nodeID, e.key)] = b
	}
	return out
}

// nodeEntities are a mesh node's entities for what it has sent so far:
// each sensor appears once its value has been heard.
func nodeEntities(st *topics.HassNodeState, expireAfter int) []entity {
	state := topics.HassNode(st.ID)
	sensor := func(key, name string, has bool, fields map[string]any) []entity {
		if !has {
			return nil
		}
		fields["name"] = name
		fields["state_topic"] = state
		fields["expire_after"] = expireAfter
		return []entity{{componentSensor, key, fields}}
	}
	value := func(field string) string { return "{{ value_json." + field + " }}" }
	measurement := func(field string, more map[string]any) map[string]any {
		m := map[string]any{"state_class": "measurement", "value_template": value(field)}
		maps.Copy(m, more)
		return m
	}
	diagnostic := func(m map[string]any) map[string]any { m["entity_category"] = "diagnostic"; return m }
	var out []entity
	for _, e := range [][]entity{
		// Battery levels above 100 mean external power: shown as 100 %.
		sensor("battery", "Battery", st.BatteryLevel != nil, map[string]any{
			"device_class": "battery", "unit_of_measurement": "%", "state_class": "measurement",
			"value_template": "{{ [value_json.battery_level, 100] | min }}"}),
		sensor("voltage", "Voltage", st.Voltage != nil, measurement("voltage", map[string]any{
			"device_class": "voltage", "unit_of_measurement": "V", "suggested_display_precision": 2})),
		sensor("channel_utilization", "Channel utilization", st.ChannelUtilization != nil, measurement("channel_utilization", map[string]any{
			"unit_of_measurement": "%", "suggested_display_precision": 1, "icon": "mdi:radio-tower"})),
		sensor("air_util_tx", "Air utilization TX", st.AirUtilTX != nil, measurement("air_util_tx", map[string]any{
			"unit_of_measurement": "%", "suggested_display_precision": 1, "icon": "mdi:access-point"})),
		sensor("temperature", "Temperature", st.Temperature != nil, measurement("temperature", map[string]any{
			"device_class": "temperature", "unit_of_measurement": "°C", "suggested_display_precision": 1})),
		sensor("humidity", "Humidity", st.RelativeHumidity != nil, measurement("relative_humidity", map[string]any{
			"device_class": "humidity", "unit_of_measurement": "%", "suggested_display_precision": 0})),
		sensor("pressure", "Barometric pressure", st.BarometricPressure != nil, measurement("barometric_pressure", map[string]any{
			"device_class": "atmospheric_pressure", "unit_of_measurement": "hPa", "suggested_display_precision": 1})),
		sensor("iaq", "IAQ", st.IAQ != nil, measurement("iaq", map[string]any{"icon": "mdi:air-filter"})),
		sensor("rssi", "RSSI", st.RSSI != nil, diagnostic(measurement("rssi", map[string]any{
			"device_class": "signal_strength", "unit_of_measurement": "dBm"}))),
		sensor("snr", "SNR", st.SNR != nil, diagnostic(measurement("snr", map[string]any{
			"unit_of_measurement": "dB", "suggested_display_precision": 2, "icon": "mdi:signal"}))),
		sensor("hops_away", "Hops away", st.HopsAway != nil, diagnostic(measurement("hops_away", map[string]any{"icon": "mdi:router"}))),
		sensor("last_heard", "Last heard", true, diagnostic(map[string]any{
			"device_class": "timestamp", "value_template": value("last_heard")})),
	} {
		out = append(out, e...)
	}
	if st.Latitude != nil && st.Longitude != nil {
		out = append(out, entity{componentDeviceTracker, "position", map[string]any{
			"name": "Position", "source_type": "gps", "json_attributes_topic": state,
			// gps_accuracy is always there with a position; altitude
			// only when the node sent one.
			"json_attributes_template": "{{ {'latitude': value_json.latitude, 'longitude': value_json.longitude, " +
				"'gps_accuracy': value_json.gps_accuracy, 'altitude': value_json.altitude | default(none)} | tojson }}",
		}})
	}
	return out
}

// sendText is a text entity whose command is the firmware's JSON downlink
// of a text sent by the radio whose node number is from; to is the
// destination, 0 for a broadcast on channel.
func sendText(key, name string, root string, from, to, channel uint32) entity {
	head := fmt.Sprintf(`{"type":%q,"from":%d,`, mesh.DownlinkSendText, from)
	if to != 0 {
		head += fmt.Sprintf(`"to":%d,`, to)
	} else {
		head += fmt.Sprintf(`"channel":%d,`, channel)
	}
	return entity{componentText, key, map[string]any{
		"name": name, "command_topic": downlinkTopic(root),
		"command_template": head + `"payload":{{ value | tojson }}}`,
		// Home Assistant counts characters, the mesh bytes: a longer text
		// in bytes is refused by the radio side (and reported on its
		// result topics).
		"min": 1, "max": topics.MaxTextBytes, "mode": "text",
		// A retained downlink would be sent again to every radio side
		// that subscribes.
		"retain": false, "icon": "mdi:message-text",
	}}
}

// downlinkTopic is the firmware's JSON downlink topic, "<root>/2/json/mqtt/".
func downlinkTopic(root string) string {
	return strings.TrimSuffix(topics.JSONDownlinkFilter(root), "#")
}

// nodeConfigs renders a mesh node's discovery payloads.
func (s *state) nodeConfigs(n *node) map[string][]byte {
	st := &n.st
	name := st.LongName
	if name == "" {
		name = st.ShortName
	}
	if name == "" {
		name = st.ID
	}
	device := map[string]any{"identifiers": []string{nodeDeviceID(st.ID)}, "name": name, "manufacturer": "Meshtastic"}
	if st.HWModel != "" {
		device["model"] = st.HWModel
	}
	if st.Via != "" {
		device["via_device"] = bridgeDeviceID(st.Via)
	}
	entities := nodeEntities(st, int(math.Ceil(s.cfg.Expire.Seconds())))
	// Direct messages go out on the radio that heard the node, once its
	// radio record tells its node number and topic root.
	if b := s.bridges[st.Via]; b != nil && b.radio != nil && b.radio.Num != 0 && b.radio.Root != "" && b.radio.Num != st.Num {
		entities = append(entities, sendText("send", "Send direct message", b.radio.Root, b.radio.Num, st.Num, 0))
	}
	availability := map[string]any{"availability": []any{map[string]any{
		"topic": topics.HassAvailability, "payload_available": topics.HassOnline, "payload_not_available": topics.HassOffline,
	}}}
	return s.configs(nodeObjectID(st.ID), device, availability, entities)
}

// bridgeConfigs renders a radio side's discovery payloads: its link, its
// queue and its airtime, as its status record says (read from the record
// itself, which the radio side keeps up to date, through a broker's will
// too), and a text entity per channel of its radio.
func (s *state) bridgeConfigs(b *bridge) map[string][]byte {
	device := map[string]any{
		"identifiers": []string{bridgeDeviceID(b.id)}, "name": "SovereignRelay " + b.id,
		"manufacturer": "SovereignRelay", "model": "Meshtastic bridge",
	}
	if b.radio != nil && b.radio.Firmware != "" {
		device["sw_version"] = b.radio.Firmware
	}
	if b.radio != nil && b.radio.HWModel != "" {
		device["hw_version"] = b.radio.HWModel
	}
	status := topics.Status(b.id)
	online := string(topics.LinkOnline)
	entities := []entity{
		{componentBinarySensor, "link", map[string]any{
			"name": "Radio link", "device_class": "connectivity", "state_topic": status,
			"value_template":        "{{ 'ON' if value_json.state == '" + online + "' else 'OFF' }}",
			"json_attributes_topic": status,
		}},
		{componentSensor, "link_state", map[string]any{
			"name": "Radio link state", "device_class": "enum", "entity_category": "diagnostic", "state_topic": status,
			"options":        []string{string(topics.LinkConnecting), online, string(topics.LinkDisconnected), string(topics.LinkOffline)},
			"value_template": "{{ value_json.state }}",
		}},
		{componentSensor, "link_since", map[string]any{
			"name": "Radio link state since", "device_class": "timestamp", "entity_category": "diagnostic", "state_topic": status,
			"value_template": "{{ value_json.since }}",
		}},
		{componentBinarySensor, "airtime", map[string]any{
			"name": "Airtime share spent", "device_class": "problem", "state_topic": status,
			// Left out of the record while packets are not held back.
			"value_template": "{{ 'ON' if value_json.airtime_blocked | default(false) else 'OFF' }}",
		}},
		// The queue and the airtime are left out of the record when 0, and
		// by radio sides that predate them.
		{componentSensor, "queue_depth", map[string]any{
			"name": "Queue depth", "state_class": "measurement", "icon": "mdi:tray-full", "state_topic": status,
			"value_template": "{{ value_json.queue_depth | default(0) }}",
		}},
		{componentSensor, "airtime_used", map[string]any{
			"name": "Airtime used", "device_class": "duration", "unit_of_measurement": "s", "state_class": "measurement",
			"suggested_display_precision": 1, "state_topic": status,
			"value_template": "{{ value_json.airtime_used_seconds | default(0) }}",
		}},
		{componentSensor, "airtime_budget", map[string]any{
			"name": "Airtime budget", "device_class": "duration", "unit_of_measurement": "s", "state_class": "measurement",
			"suggested_display_precision": 0, "entity_category": "diagnostic", "state_topic": status,
			"value_template": "{{ value_json.airtime_budget_seconds | default(0) }}",
		}},
	}
	if r := b.radio; r != nil && r.Num != 0 && r.Root != "" {
		for _, ch := range r.Channels {
			entities = append(entities, sendText(fmt.Sprintf("send_ch%d", ch.Index), "Send on "+ch.Name, r.Root, r.Num, 0, ch.Index))
		}
	}
	return s.configs(bridgeDeviceID(b.id), device, nil, entities)
}

// xmppConfigs renders an XMPP side's discovery payloads: whether it is
// connected to its server, since when, and how many rooms it is in, as its
// status record says. The device hangs off no other (no via_device): the
// XMPP side is not behind any one radio side, sends through whichever is
// online on the mesh, and may run without one.
func (s *state) xmppConfigs(x *xmppSide) map[string][]byte {
	id := xmppDeviceID(x.jid)
	device := map[string]any{
		"identifiers": []string{id}, "name": "SovereignRelay XMPP " + x.jid,
		"manufacturer": "SovereignRelay", "model": "XMPP bridge",
	}
	status := topics.XMPPStatus(x.jid)
	entities := []entity{
		{componentBinarySensor, "connected", map[string]any{
			"name": "XMPP connected", "device_class": "connectivity", "state_topic": status,
			"value_template":        "{{ 'ON' if value_json.state == '" + string(topics.LinkOnline) + "' else 'OFF' }}",
			"json_attributes_topic": status,
		}},
		{componentSensor, "rooms", map[string]any{
			"name": "Rooms joined", "state_class": "measurement", "icon": "mdi:forum", "state_topic": status,
			"value_template": "{{ value_json.rooms | default(0) }}",
		}},
		{componentSensor, "since", map[string]any{
			"name": "XMPP state since", "device_class": "timestamp", "entity_category": "diagnostic", "state_topic": status,
			"value_template": "{{ value_json.since }}",
		}},
	}
	return s.configs(id, device, nil, entities)
}
