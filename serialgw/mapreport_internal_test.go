package serialgw

import (
	"strings"
	"testing"
	"time"

	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
)

// A coordinate keeps its top bits and moves to the centre of its cell, as
// the firmware truncates map report positions. The expected values are
// floor(v / cell) * cell + cell / 2, with cell = 2^(32 - bits), worked out
// by hand.
func TestTruncateCoord(t *testing.T) {
	for _, tc := range []struct {
		v    int32
		bits uint32
		want int32
	}{
		{515100000, 14, 514981888}, // 51.51° N, the default precision
		{-900000, 14, -917504},     // just west of Greenwich: rounds down, towards the south-west
		{515100000, 12, 515375104},
		{515100000, 15, 515047424},
		{0, 14, 131072},
		{-1, 14, -131072},
		{-335000000, 13, -334757888},
		{900000000, 15, 900005888},            // the pole
		{1800000000, 12, 1799880704},          // the antimeridian, coarsest
		{-1800000000, 12, -1799880704},        // and west of it
		{514981888, 14, 514981888},            // a centre stays put
		{514981888 - 131072, 14, 514981888},   // a cell's first value
		{514981888 + 131071, 14, 514981888},   // its last
		{514981888 + 131072, 14, 515244032},   // the next cell
		{-917504 + 131071, 14, -917504},       // negative cells too
		{-917504 - 131072 - 1, 14, -1179648},  // and the one below
		{2147483647, 12, 2147483647 - 524287}, // no overflow at the top
	} {
		if got := truncateCoord(tc.v, tc.bits); got != tc.want {
			t.Errorf("truncateCoord(%d, %d) = %d, want %d", tc.v, tc.bits, got, tc.want)
		}
	}
}

// The precision is refused outside what the firmware allows.
func TestValidMapReportPrecision(t *testing.T) {
	for bits := uint32(0); bits <= 33; bits++ {
		err := ValidMapReportPrecision(bits)
		if ok := bits >= 12 && bits <= 15; ok != (err == nil) {
			t.Errorf("%d bits: err = %v", bits, err)
		}
		if err != nil && (!strings.Contains(err.Error(), "12 to 15") || strings.Contains(err.Error(), "\n")) {
			t.Errorf("%d bits: error %q does not name the range on one line", bits, err)
		}
	}
}

// The default channel is the preset's name with the default key, on a
// preset's default frequency slot.
func TestHasDefaultChannel(t *testing.T) {
	radio := func(primaryName string, psk []byte, lora *meshpb.Config_LoRaConfig, secondary ...*meshpb.Channel) *radioState {
		r := &radioState{lora: lora}
		r.channels[0] = &meshpb.Channel{Index: 0, Role: meshpb.Channel_PRIMARY, Settings: &meshpb.ChannelSettings{Name: primaryName, Psk: psk}}
		for i, c := range secondary {
			r.channels[i+1] = c
		}
		return r
	}
	longFast := &meshpb.Config_LoRaConfig{UsePreset: true, ModemPreset: meshpb.Config_LoRaConfig_LONG_FAST, Region: meshpb.Config_LoRaConfig_EU_868}
	secret := &meshpb.Channel{Index: 1, Role: meshpb.Channel_SECONDARY, Settings: &meshpb.ChannelSettings{Name: "LongFast", Psk: []byte{1}}}
	for _, tc := range []struct {
		name string
		r    *radioState
		want bool
	}{
		{"unnamed primary, default key", radio("", []byte{1}, longFast), true},
		{"named after the preset", radio("LongFast", []byte{1}, longFast), true},
		{"another key", radio("", []byte{2}, longFast), false},
		{"a private key", radio("", make([]byte, 16), longFast), false},
		{"another name", radio("Village", []byte{1}, longFast), false},
		{"another name, default secondary", radio("Village", make([]byte, 16), longFast, secret), false},
		{"custom modem", radio("", []byte{1}, &meshpb.Config_LoRaConfig{UsePreset: false, Bandwidth: 125, SpreadFactor: 12, CodingRate: 8}), false},
		{"frequency override", radio("", []byte{1}, &meshpb.Config_LoRaConfig{UsePreset: true, OverrideFrequency: 869.5}), false},
		{"slot chosen by number", radio("", []byte{1}, &meshpb.Config_LoRaConfig{UsePreset: true, ChannelNum: 3}), false},
	} {
		if got := tc.r.hasDefaultChannel(); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// What the radio sends as a direct message is encrypted to its recipient,
// except on the ports the firmware never sends that way, and in licensed
// mode.
func TestSentAsPKI(t *testing.T) {
	pkt := func(to uint32, port meshpb.PortNum) *meshpb.MeshPacket {
		return &meshpb.MeshPacket{To: to, PayloadVariant: &meshpb.MeshPacket_Decoded{Decoded: &meshpb.Data{Portnum: port}}}
	}
	r := &radioState{myNum: 0x5eed0001, self: &meshpb.User{}}
	ham := &radioState{myNum: 0x5eed0001, self: &meshpb.User{IsLicensed: true}}
	for _, tc := range []struct {
		r    *radioState
		p    *meshpb.MeshPacket
		want bool
	}{
		{r, pkt(0xffffffff, meshpb.PortNum_TEXT_MESSAGE_APP), false},
		{r, pkt(0xa1b2c3d4, meshpb.PortNum_TEXT_MESSAGE_APP), true},
		{r, pkt(0xa1b2c3d4, meshpb.PortNum_WAYPOINT_APP), true},
		{r, pkt(0xa1b2c3d4, meshpb.PortNum_POSITION_APP), false},
		{r, pkt(0xa1b2c3d4, meshpb.PortNum_NODEINFO_APP), false},
		{r, pkt(0xa1b2c3d4, meshpb.PortNum_TRACEROUTE_APP), false},
		{r, pkt(0xa1b2c3d4, meshpb.PortNum_ROUTING_APP), false},
		{ham, pkt(0xa1b2c3d4, meshpb.PortNum_TEXT_MESSAGE_APP), false},
	} {
		if got := tc.r.sentAsPKI(tc.p); got != tc.want {
			t.Errorf("to %08x port %v licensed %v: %v, want %v", tc.p.GetTo(), tc.p.GetDecoded().GetPortnum(), tc.r.self.GetIsLicensed(), got, tc.want)
		}
	}
}

// Online local nodes are counted as the firmware counts them: heard in the
// last two hours, their last packet not through MQTT, the radio itself not.
func TestOnlineLocal(t *testing.T) {
	db, err := openNodeDB("")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	ago := func(d time.Duration) uint32 { return uint32(now.Add(-d).Unix()) }
	const self = 0x5eed0001
	for num, heard := range map[uint32]uint32{
		self:       ago(time.Minute),
		0xa1:       ago(time.Minute),
		0xa2:       ago(2*time.Hour - time.Second),
		0xa3:       ago(2 * time.Hour), // just offline
		0xa4:       ago(-time.Minute),  // the radio's clock is ahead
		0xa5:       0,                  // never heard
		0xb1:       ago(time.Minute),   // last heard through MQTT
		0xb2:       ago(time.Minute),   // through MQTT before, over the air since
		0xdeadbeef: ago(30 * 24 * time.Hour),
	} {
		db.updateUser(num, nil, heard)
	}
	db.heardVia(0xb1, true)
	db.heardVia(0xb2, true)
	db.heardVia(0xb2, false)
	if n := db.onlineLocal(now, onlineWindow, self); n != 4 {
		t.Errorf("online local nodes = %d, want 4 (a1, a2, a4, b2)", n)
	} // The published record says which was last heard through MQTT.
	if rec, _ := db.updateUser(0xb1, nil, 0); !rec.ViaMQTT {
		t.Error("the record of a node last heard through MQTT does not say so")
	}
	if rec, _ := db.updateUser(0xb2, nil, 0); rec.ViaMQTT {
		t.Error("the record of a node heard over the air says MQTT")
	}
}
