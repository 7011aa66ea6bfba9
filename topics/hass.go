package topics

import "strings"

// The topics the Home Assistant publisher (package hass, --hass) keeps for
// the discovery configs it announces: retained, written only by the
// bridge, read by Home Assistant and any other local tool.
const (
	hassPrefix = bridgeRoot + "/hass/"

	// HassAvailability is "online" while some radio side on the broker is
	// online (its StatusRecord says so), else "offline": the availability
	// of every mesh node's entities.
	HassAvailability = hassPrefix + "availability"

	hassNodePrefix = hassPrefix + "node/"
)

// Payloads of HassAvailability, Home Assistant's defaults.
const (
	HassOnline  = "online"
	HassOffline = "offline"
)

// HassNode is the retained topic of one mesh node's latest state
// (HassNodeState), keyed by its "!xxxxxxxx" id. An empty retained message
// there means the node is no longer announced.
func HassNode(id string) string { return hassNodePrefix + id + "/state" }

// IsHassNode reports whether topic is a HassNode topic: latest wins there,
// so it need not cross an external broker at QoS 1.
func IsHassNode(topic string) bool { return strings.HasPrefix(topic, hassNodePrefix) }

// HassNodeState is the latest of what the bridge heard from one mesh node,
// as one JSON object: retained on HassNode(ID), republished whenever the
// node is heard. Every entity of the node reads its value from it. A
// measurement is present once the node has sent it and keeps its latest
// value; absent ones have never been heard.
type HassNodeState struct {
	ID        string `json:"id"` // "!xxxxxxxx"
	Num       uint32 `json:"num"`
	LongName  string `json:"long_name,omitempty"`
	ShortName string `json:"short_name,omitempty"`
	HWModel   string `json:"hw_model,omitempty"`
	Role      string `json:"role,omitempty"`
	// Via is the gateway id of the radio that first heard the node in
	// this announcement: the bridge device the node's device hangs off,
	// and the radio its direct messages go out on.
	Via string `json:"via,omitempty"`
	// LastHeard is when the node was last heard, RFC 3339 in UTC with an
	// explicit offset ("2026-11-25T20:38:31+00:00").
	LastHeard string `json:"last_heard"`

	// From the packets themselves (not through MQTT).
	RSSI     *int32   `json:"rssi,omitempty"` // dBm
	SNR      *float64 `json:"snr,omitempty"`  // dB
	HopsAway *uint32  `json:"hops_away,omitempty"`

	// TELEMETRY_APP device metrics.
	BatteryLevel       *uint32  `json:"battery_level,omitempty"` // %; above 100: external power
	Voltage            *float64 `json:"voltage,omitempty"`       // V
	ChannelUtilization *float64 `json:"channel_utilization,omitempty"`
	AirUtilTX          *float64 `json:"air_util_tx,omitempty"`
	UptimeSeconds      *uint32  `json:"uptime_seconds,omitempty"`

	// TELEMETRY_APP environment metrics.
	Temperature        *float64 `json:"temperature,omitempty"`         // °C
	RelativeHumidity   *float64 `json:"relative_humidity,omitempty"`   // %
	BarometricPressure *float64 `json:"barometric_pressure,omitempty"` // hPa
	IAQ                *uint32  `json:"iaq,omitempty"`                 // index, 0-500

	// POSITION_APP.
	Latitude      *float64 `json:"latitude,omitempty"`  // degrees
	Longitude     *float64 `json:"longitude,omitempty"` // degrees
	Altitude      *int32   `json:"altitude,omitempty"`  // metres above sea level
	GPSAccuracy   *float64 `json:"gps_accuracy,omitempty"`
	PrecisionBits *uint32  `json:"precision_bits,omitempty"`
}
