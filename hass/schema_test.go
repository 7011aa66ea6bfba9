package hass

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Home Assistant's documented schema of the discovery payloads this
// package publishes, written from the MQTT integration's documentation
// (home-assistant.io, source/_integrations/{sensor,binary_sensor,
// device_tracker,text}.mqtt.markdown, the "MQTT Discovery" section of
// mqtt.markdown for origin, and sensor.markdown for the units each
// device class takes). Home Assistant ignores keys it does not know, so a
// misspelt key would pass silently there: here it fails.

// componentSchema is one component's keys.
type componentSchema struct {
	required []string
	// anyOf: at least one of these keys must be present.
	anyOf   []string
	allowed []string
}

// Keys every component documents.
var commonKeys = []string{
	"availability", "availability_mode", "availability_template", "availability_topic",
	"device", "icon", "json_attributes_template", "json_attributes_topic", "name", "object_id",
	"payload_available", "payload_not_available", "qos", "unique_id",
	// From "MQTT Discovery": the origin of the payload, for every component.
	"origin",
}

var schemas = map[string]componentSchema{
	componentSensor: {
		required: []string{"state_topic"},
		allowed: []string{"device_class", "enabled_by_default", "encoding", "entity_category", "entity_picture",
			"expire_after", "force_update", "last_reset_value_template", "options", "suggested_display_precision",
			"state_class", "state_topic", "unit_of_measurement", "value_template"},
	},
	componentBinarySensor: {
		required: []string{"state_topic"},
		allowed: []string{"device_class", "enabled_by_default", "encoding", "entity_category", "entity_picture",
			"expire_after", "force_update", "off_delay", "payload_off", "payload_on", "state_topic", "value_template"},
	},
	componentDeviceTracker: {
		// "The state_topic can only be omitted if json_attributes_topic is used."
		anyOf: []string{"state_topic", "json_attributes_topic"},
		allowed: []string{"payload_home", "payload_not_home", "payload_reset", "source_type", "state_topic",
			"value_template"},
	},
	componentText: {
		required: []string{"command_topic"},
		allowed: []string{"command_template", "command_topic", "enabled_by_default", "encoding", "entity_category",
			"entity_picture", "max", "min", "mode", "pattern", "retain", "state_topic", "value_template"},
	},
}

// The device map's keys (the same table in each component's page).
var deviceKeys = []string{"configuration_url", "connections", "hw_version", "identifiers", "manufacturer",
	"model", "model_id", "name", "serial_number", "suggested_area", "sw_version", "via_device"}

// serial_number is missing from the device tracker's table: not used.
var deviceTrackerDeviceKeys = slices.DeleteFunc(slices.Clone(deviceKeys), func(k string) bool { return k == "serial_number" })

var availabilityKeys = []string{"payload_available", "payload_not_available", "topic", "value_template"}

var originKeys = []string{"name", "sw_version", "support_url"}

// Units each sensor device class takes (sensor.markdown); nil: none.
var sensorUnits = map[string][]string{
	"atmospheric_pressure": {"cbar", "bar", "hPa", "mmHg", "inHg", "kPa", "mbar", "Pa", "psi"},
	"battery":              {"%"},
	"duration":             {"d", "h", "min", "s", "ms"},
	"humidity":             {"%"},
	"signal_strength":      {"dB", "dBm"},
	"temperature":          {"°C", "°F", "K"},
	"voltage":              {"V", "mV", "µV", "kV", "MV"},
	"timestamp":            nil,
	"enum":                 nil,
}

var binarySensorClasses = []string{"battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door",
	"garage_door", "gas", "heat", "light", "lock", "moisture", "motion", "moving", "occupancy", "opening", "plug",
	"power", "presence", "problem", "running", "safety", "smoke", "sound", "tamper", "update", "vibration", "window"}

var sourceTypes = []string{"gps", "router", "bluetooth", "bluetooth_le"}

// topicLevel is what a node_id or object_id may hold ("MQTT Discovery").
var topicLevel = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// validateDiscovery checks one discovery message, its topic and payload,
// against the schema, and returns what is wrong.
func validateDiscovery(prefix, topic string, payload []byte) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(topic+": "+format, args...)) }
	levels := strings.Split(strings.TrimPrefix(topic, prefix+"/"), "/")
	if !strings.HasPrefix(topic, prefix+"/") || len(levels) != 4 || levels[3] != "config" {
		fail("not <prefix>/<component>/<node_id>/<object_id>/config")
		return errs
	}
	component := levels[0]
	schema, ok := schemas[component]
	if !ok {
		fail("component %q has no schema here", component)
		return errs
	}
	for _, l := range levels[1:3] {
		if !topicLevel.MatchString(l) {
			fail("topic level %q has characters outside [a-zA-Z0-9_-]", l)
		}
	}
	var cfg map[string]any
	if err := json.Unmarshal(payload, &cfg); err != nil {
		fail("payload is not a JSON object: %v", err)
		return errs
	}
	allowed := slices.Concat(commonKeys, schema.allowed)
	for k := range cfg {
		if !slices.Contains(allowed, k) {
			fail("key %q is not in the %s schema", k, component)
		}
	}
	for _, k := range schema.required {
		if _, ok := cfg[k]; !ok {
			fail("required key %q missing", k)
		}
	}
	if len(schema.anyOf) > 0 && !slices.ContainsFunc(schema.anyOf, func(k string) bool { _, ok := cfg[k]; return ok }) {
		fail("needs one of %v", schema.anyOf)
	}
	for k, v := range cfg {
		if strings.HasSuffix(k, "_topic") || k == "unique_id" || strings.HasSuffix(k, "_template") || k == "name" {
			if s, ok := v.(string); !ok || s == "" {
				fail("%s must be a non-empty string, is %v", k, v)
			}
		}
		if strings.HasSuffix(k, "_topic") && strings.ContainsAny(v.(string), "+#") {
			fail("%s %q has a wildcard", k, v)
		}
	}
	// The device registry needs a unique_id, and a device identified.
	if dev, ok := cfg["device"]; ok {
		if _, ok := cfg["unique_id"]; !ok {
			fail("device without unique_id")
		}
		d, ok := dev.(map[string]any)
		if !ok {
			fail("device is not a map")
		} else {
			keys := deviceKeys
			if component == componentDeviceTracker {
				keys = deviceTrackerDeviceKeys
			}
			for k := range d {
				if !slices.Contains(keys, k) {
					fail("device key %q is not in the schema", k)
				}
			}
			if ids, ok := d["identifiers"].([]any); !ok || len(ids) == 0 {
				if _, ok := d["connections"]; !ok {
					fail("device needs identifiers or connections")
				}
			}
		}
	}
	if av, ok := cfg["availability"]; ok {
		if _, ok := cfg["availability_topic"]; ok {
			fail("availability and availability_topic together")
		}
		list, ok := av.([]any)
		if !ok || len(list) == 0 {
			fail("availability is not a list of topics")
		}
		for _, item := range list {
			m, ok := item.(map[string]any)
			if !ok || m["topic"] == nil {
				fail("availability item %v has no topic", item)
				continue
			}
			for k := range m {
				if !slices.Contains(availabilityKeys, k) {
					fail("availability key %q is not in the schema", k)
				}
			}
		}
	}
	if o, ok := cfg["origin"].(map[string]any); ok {
		if o["name"] == nil {
			fail("origin without name")
		}
		for k := range o {
			if !slices.Contains(originKeys, k) {
				fail("origin key %q is not in the schema", k)
			}
		}
	} else if _, ok := cfg["origin"]; ok {
		fail("origin is not a map")
	}
	if v, ok := cfg["expire_after"]; ok {
		if f, ok := v.(float64); !ok || f != float64(int64(f)) || f < 0 {
			fail("expire_after %v is not a whole number of seconds", v)
		}
	}
	if v, ok := cfg["qos"]; ok && v != 0.0 && v != 1.0 && v != 2.0 {
		fail("qos %v", v)
	}
	switch component {
	case componentSensor:
		errs = append(errs, validateSensor(topic, cfg)...)
	case componentBinarySensor:
		if c, ok := cfg["device_class"].(string); ok && !slices.Contains(binarySensorClasses, c) {
			fail("binary sensor device class %q", c)
		}
		if c, ok := cfg["entity_category"]; ok && c != "diagnostic" {
			fail("a binary sensor's entity_category must be diagnostic, is %v", c)
		}
	case componentDeviceTracker:
		if s, ok := cfg["source_type"].(string); ok && !slices.Contains(sourceTypes, s) {
			fail("source_type %q", s)
		}
	case componentText:
		if m, ok := cfg["mode"]; ok && m != "text" && m != "password" {
			fail("text mode %v", m)
		}
		minimum, _ := cfg["min"].(float64)
		maximum, ok := cfg["max"].(float64)
		if !ok {
			maximum = 255
		}
		if maximum > 255 || minimum < 0 || minimum > maximum {
			fail("text min %v, max %v (max is at most 255)", cfg["min"], cfg["max"])
		}
		if c, ok := cfg["entity_category"]; ok && c != "config" && c != "diagnostic" {
			fail("entity_category %v", c)
		}
	}
	return errs
}

func validateSensor(topic string, cfg map[string]any) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(topic+": "+format, args...)) }
	class, hasClass := cfg["device_class"].(string)
	unit, hasUnit := cfg["unit_of_measurement"].(string)
	stateClass, hasStateClass := cfg["state_class"].(string)
	if hasClass {
		units, known := sensorUnits[class]
		switch {
		case !known:
			fail("sensor device class %q has no units here", class)
		case units == nil && hasUnit:
			fail("device class %s takes no unit, has %q", class, unit)
		case units != nil && !slices.Contains(units, unit):
			fail("device class %s takes %v, not %q", class, units, unit)
		}
	}
	if hasStateClass && !slices.Contains([]string{"measurement", "measurement_angle", "total", "total_increasing"}, stateClass) {
		fail("state_class %q", stateClass)
	}
	if (class == "timestamp" || class == "enum") && hasStateClass {
		fail("a %s sensor has no state_class", class)
	}
	if opts, ok := cfg["options"]; ok {
		list, ok := opts.([]any)
		if class != "enum" || !ok || len(list) == 0 || hasStateClass || hasUnit {
			fail("options need device_class enum, a non-empty list, and no state_class or unit")
		}
	} else if class == "enum" {
		fail("an enum sensor needs options")
	}
	if c, ok := cfg["entity_category"]; ok && c != "diagnostic" {
		fail("a sensor's entity_category must be diagnostic, is %v", c)
	}
	if p, ok := cfg["suggested_display_precision"]; ok {
		if f, ok := p.(float64); !ok || f != float64(int(f)) || f < 0 {
			fail("suggested_display_precision %v", p)
		}
	}
	return errs
}
