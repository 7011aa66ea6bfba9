package topics

import (
	"encoding/json"
	"testing"
)

// The Home Assistant topics and the node state read as the README shows
// them: Home Assistant's templates and local tools rely on the names.
func TestHassTopics(t *testing.T) {
	if HassAvailability != "sovereign/hass/availability" || HassNode("!a1b2c3d4") != "sovereign/hass/node/!a1b2c3d4/state" {
		t.Errorf("topics %q %q", HassAvailability, HassNode("!a1b2c3d4"))
	}
	if !IsBridgeTopic(HassAvailability) || !IsBridgeTopic(HassNode("!a1b2c3d4")) {
		t.Error("the Home Assistant topics are not the bridge's own")
	}
	u32 := func(v uint32) *uint32 { return &v }
	f := func(v float64) *float64 { return &v }
	rssi, alt := int32(-101), int32(43)
	st := HassNodeState{ID: "!a1b2c3d4", Num: 2712847316, LongName: "Ana's T-Beam", ShortName: "ANA", HWModel: "TBEAM", Role: "CLIENT",
		Via: "!5eed0001", LastHeard: "2026-11-25T20:38:31+00:00", RSSI: &rssi, SNR: f(-3.25), HopsAway: u32(2),
		BatteryLevel: u32(101), Voltage: f(4.15), ChannelUtilization: f(12.5), AirUtilTX: f(1.25), UptimeSeconds: u32(7200),
		Temperature: f(21.5), RelativeHumidity: f(55), BarometricPressure: f(1013.2), IAQ: u32(42),
		Latitude: f(51.5), Longitude: f(-0.1), Altitude: &alt, GPSAccuracy: f(1459), PrecisionBits: u32(14)}
	want := `{"id":"!a1b2c3d4","num":2712847316,"long_name":"Ana's T-Beam","short_name":"ANA","hw_model":"TBEAM","role":"CLIENT",` +
		`"via":"!5eed0001","last_heard":"2026-11-25T20:38:31+00:00","rssi":-101,"snr":-3.25,"hops_away":2,` +
		`"battery_level":101,"voltage":4.15,"channel_utilization":12.5,"air_util_tx":1.25,"uptime_seconds":7200,` +
		`"temperature":21.5,"relative_humidity":55,"barometric_pressure":1013.2,"iaq":42,` +
		`"latitude":51.5,"longitude":-0.1,"altitude":43,"gps_accuracy":1459,"precision_bits":14}`
	if b, err := json.Marshal(st); err != nil || string(b) != want {
		t.Errorf("node state encodes as\n%s (%v), want\n%s", b, err, want)
	}
	if b, _ := json.Marshal(HassNodeState{ID: "!00000002", Num: 2, LastHeard: "2026-11-25T20:38:31+00:00"}); string(b) != `{"id":"!00000002","num":2,"last_heard":"2026-11-25T20:38:31+00:00"}` {
		t.Errorf("a node heard once encodes as %s", b)
	}
}
