package mesh

//lint:file-ignore SA1019 LongSlow and VeryLongSlow are deprecated presets, but radios still run them and their airtime must be known.

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
)

// airtimeTable is the reference's preset table (meshtastic-wire.md §4.2):
// parameters, T_sym as printed, LDRO, and ToA for 33 and 255 bytes in ms.
var airtimeTable = []struct {
	preset   meshpb.Config_LoRaConfig_ModemPreset
	sf       int
	bw       float64
	cr       int
	tsymMs   float64
	ldro     bool
	toa33ms  int64
	toa255ms int64
}{
	{meshpb.Config_LoRaConfig_SHORT_TURBO, 7, 500, 5, 0.256, false, 20, 102},
	{meshpb.Config_LoRaConfig_SHORT_FAST, 7, 250, 5, 0.512, false, 40, 204},
	{meshpb.Config_LoRaConfig_SHORT_SLOW, 8, 250, 5, 1.024, false, 75, 362},
	{meshpb.Config_LoRaConfig_MEDIUM_FAST, 9, 250, 5, 2.048, false, 140, 642},
	{meshpb.Config_LoRaConfig_MEDIUM_SLOW, 10, 250, 5, 4.096, false, 259, 1181},
	{meshpb.Config_LoRaConfig_MEDIUM_TURBO, 9, 500, 5, 1.024, false, 70, 321},
	{meshpb.Config_LoRaConfig_LONG_TURBO, 11, 500, 8, 4.096, false, 312, 1656},
	{meshpb.Config_LoRaConfig_LONG_FAST, 11, 250, 5, 8.192, false, 477, 2157},
	{meshpb.Config_LoRaConfig_LONG_MODERATE, 11, 125, 8, 16.384, true, 1511, 7934},
	{meshpb.Config_LoRaConfig_LONG_SLOW, 12, 125, 8, 32.768, true, 2761, 14295},
	{meshpb.Config_LoRaConfig_VERY_LONG_SLOW, 12, 62.5, 8, 65.5, true, 5521, 28590},
	{meshpb.Config_LoRaConfig_LITE_FAST, 9, 125, 5, 4.096, false, 280, 1283},
	{meshpb.Config_LoRaConfig_LITE_SLOW, 10, 125, 5, 8.192, false, 518, 2361},
	{meshpb.Config_LoRaConfig_NARROW_FAST, 7, 62.5, 6, 2.048, false, 181, 967},
	{meshpb.Config_LoRaConfig_NARROW_SLOW, 8, 62.5, 6, 4.096, false, 337, 1713},
	{meshpb.Config_LoRaConfig_TINY_FAST, 7, 15.6, 5, 8.2, false, 642, 3268},
	{meshpb.Config_LoRaConfig_TINY_SLOW, 8, 15.6, 6, 16.4, true, 1645, 8931},
}

func presetConfig(p meshpb.Config_LoRaConfig_ModemPreset, region meshpb.Config_LoRaConfig_RegionCode) *meshpb.Config_LoRaConfig {
	return &meshpb.Config_LoRaConfig{UsePreset: true, ModemPreset: p, Region: region}
}

func roundMs(d time.Duration) int64 {
	return int64(math.Round(float64(d) / float64(time.Millisecond)))
}

func TestTimeOnAirPresetTable(t *testing.T) {
	if len(airtimeTable) != len(presetParams) {
		t.Fatalf("table has %d presets, presetParams %d", len(airtimeTable), len(presetParams))
	}
	for _, tt := range airtimeTable {
		name := tt.preset.String()
		p, err := LoRaParamsOf(presetConfig(tt.preset, meshpb.Config_LoRaConfig_EU_868))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		want := LoRaParams{SF: tt.sf, BandwidthKHz: tt.bw, CR: tt.cr, Preamble: 16}
		if p != want {
			t.Errorf("%s: params %+v, want %+v", name, p, want)
		}
		if ms := float64(p.SymbolTime()) / 1e6; math.Abs(ms-tt.tsymMs) > 0.05 {
			t.Errorf("%s: T_sym %.4f ms, table %v", name, ms, tt.tsymMs)
		}
		if p.LowDataRateOptimize() != tt.ldro {
			t.Errorf("%s: LDRO %v, table %v", name, p.LowDataRateOptimize(), tt.ldro)
		}
		if got := roundMs(TimeOnAir(p, 33)); got != tt.toa33ms {
			t.Errorf("%s: ToA 33 B %d ms (%v), table %d ms", name, got, TimeOnAir(p, 33), tt.toa33ms)
		}
		if got := roundMs(TimeOnAir(p, 255)); got != tt.toa255ms {
			t.Errorf("%s: ToA 255 B %d ms (%v), table %d ms", name, got, TimeOnAir(p, 255), tt.toa255ms)
		}
	}
}

func TestTimeOnAirExact(t *testing.T) {
	lf := LoRaParams{SF: 11, BandwidthKHz: 250, CR: 5, Preamble: 16}
	tests := []struct {
		name string
		p    LoRaParams
		pl   int
		want time.Duration
	}{
		// (16+4.25) + 8 + ceil((264-44+44)/44)*5 = 20.25 + 38 symbols of 8.192 ms.
		{"LongFast 33 B", lf, 33, 477184 * time.Microsecond},
		// (8·255+16)/44 = 46.7 -> 47*5+8 = 243 symbols + 20.25.
		{"LongFast 255 B", lf, 255, 2156544 * time.Microsecond},
		// No payload: the max(…, 0) leaves the 8 fixed symbols. Negative
		// sizes count as 0.
		{"LongFast empty", lf, 0, time.Duration(28.25 * 8192 * float64(time.Microsecond))},
		{"LongFast negative", lf, -5, time.Duration(28.25 * 8192 * float64(time.Microsecond))},
		// LDRO on: 4·(SF−2) in the denominator.
		{"LongSlow 10 B", LoRaParams{SF: 12, BandwidthKHz: 125, CR: 8, Preamble: 16}, 10,
			time.Duration((20.25 + 8 + 2*8) * 32768 * float64(time.Microsecond))},
		{"invalid SF", LoRaParams{SF: 6, BandwidthKHz: 125, CR: 5, Preamble: 16}, 10, 0},
		{"invalid CR", LoRaParams{SF: 7, BandwidthKHz: 125, CR: 4, Preamble: 16}, 10, 0},
		{"invalid BW", LoRaParams{SF: 7, BandwidthKHz: 0, CR: 5, Preamble: 16}, 10, 0},
		{"NaN BW", LoRaParams{SF: 7, BandwidthKHz: math.NaN(), CR: 5, Preamble: 16}, 10, 0},
		{"invalid preamble", LoRaParams{SF: 7, BandwidthKHz: 125, CR: 5, Preamble: -1}, 10, 0},
	}
	for _, tt := range tests {
		if got := TimeOnAir(tt.p, tt.pl); got != tt.want {
			t.Errorf("%s: TimeOnAir = %v, want %v", tt.name, got, tt.want)
		}
	}
	// Time on air never decreases with size and grows by whole symbol blocks.
	for _, row := range airtimeTable {
		p := LoRaParams{SF: row.sf, BandwidthKHz: row.bw, CR: row.cr, Preamble: 16}
		prev := TimeOnAir(p, 0)
		for pl := 1; pl <= 255; pl++ {
			cur := TimeOnAir(p, pl)
			if cur < prev {
				t.Fatalf("%s: ToA(%d) = %v < ToA(%d) = %v", row.preset, pl, cur, pl-1, prev)
			}
			prev = cur
		}
	}
}

func TestLoRaParamsOf(t *testing.T) {
	const (
		eu   = meshpb.Config_LoRaConfig_EU_868
		us   = meshpb.Config_LoRaConfig_US
		l24  = meshpb.Config_LoRaConfig_LORA_24
		none = meshpb.Config_LoRaConfig_UNSET
	)
	custom := func(bw, sf, cr uint32, region meshpb.Config_LoRaConfig_RegionCode) *meshpb.Config_LoRaConfig {
		return &meshpb.Config_LoRaConfig{Bandwidth: bw, SpreadFactor: sf, CodingRate: cr, Region: region}
	}
	tests := []struct {
		name string
		c    *meshpb.Config_LoRaConfig
		want LoRaParams
	}{
		{"LongFast US", presetConfig(meshpb.Config_LoRaConfig_LONG_FAST, us), LoRaParams{11, 250, 5, 16}},
		{"region unset", presetConfig(meshpb.Config_LoRaConfig_SHORT_FAST, none), LoRaParams{7, 250, 5, 16}},
		{"preset ignores custom fields", &meshpb.Config_LoRaConfig{UsePreset: true, ModemPreset: meshpb.Config_LoRaConfig_LONG_SLOW, Bandwidth: 500, SpreadFactor: 7, CodingRate: 5}, LoRaParams{12, 125, 8, 16}},
		{"LORA_24 LongFast", presetConfig(meshpb.Config_LoRaConfig_LONG_FAST, l24), LoRaParams{11, 812.5, 5, 12}},
		{"LORA_24 ShortTurbo", presetConfig(meshpb.Config_LoRaConfig_SHORT_TURBO, l24), LoRaParams{7, 1625, 5, 12}},
		{"LORA_24 LongSlow", presetConfig(meshpb.Config_LoRaConfig_LONG_SLOW, l24), LoRaParams{12, 406.25, 8, 12}},
		{"LORA_24 VeryLongSlow", presetConfig(meshpb.Config_LoRaConfig_VERY_LONG_SLOW, l24), LoRaParams{12, 203.125, 8, 12}},
		{"custom 250/11/5", custom(250, 11, 5, eu), LoRaParams{11, 250, 5, 16}},
		{"custom 125/12/8", custom(125, 12, 8, us), LoRaParams{12, 125, 8, 16}},
		{"custom 500/7/6", custom(500, 7, 6, us), LoRaParams{7, 500, 6, 16}},
		{"code 31", custom(31, 10, 7, eu), LoRaParams{10, 31.25, 7, 16}},
		{"code 62", custom(62, 9, 5, eu), LoRaParams{9, 62.5, 5, 16}},
		{"code 200", custom(200, 8, 5, l24), LoRaParams{8, 203.125, 5, 12}},
		{"code 400", custom(400, 9, 5, l24), LoRaParams{9, 406.25, 5, 12}},
		{"code 800 on LORA_24 is not scaled again", custom(800, 11, 5, l24), LoRaParams{11, 812.5, 5, 12}},
		{"code 1600", custom(1600, 7, 8, l24), LoRaParams{7, 1625, 8, 12}},
	}
	for _, tt := range tests {
		got, err := LoRaParamsOf(tt.c)
		if err != nil || got != tt.want {
			t.Errorf("%s: LoRaParamsOf = %+v, %v; want %+v", tt.name, got, err, tt.want)
		}
		if err := got.Validate(); err != nil {
			t.Errorf("%s: Validate: %v", tt.name, err)
		}
	}

	bad := []struct {
		name string
		c    *meshpb.Config_LoRaConfig
	}{
		{"nil", nil},
		{"unknown preset", presetConfig(meshpb.Config_LoRaConfig_ModemPreset(17), eu)},
		{"negative preset", presetConfig(meshpb.Config_LoRaConfig_ModemPreset(-1), eu)},
		{"custom all zero", &meshpb.Config_LoRaConfig{}},
		{"bandwidth 0", custom(0, 11, 5, eu)},
		{"bandwidth 100", custom(100, 11, 5, eu)},
		{"bandwidth 812 (not a code)", custom(812, 11, 5, l24)},
		{"bandwidth 7 (7.8 has no code)", custom(7, 11, 5, eu)},
		{"sf 6", custom(250, 6, 5, eu)},
		{"sf 13", custom(250, 13, 5, eu)},
		{"sf 0", custom(250, 0, 5, eu)},
		{"cr 4", custom(250, 11, 4, eu)},
		{"cr 9", custom(250, 11, 9, eu)},
		{"cr 1 (numerator-style 4/5)", custom(250, 11, 1, eu)},
	}
	for _, tt := range bad {
		if got, err := LoRaParamsOf(tt.c); err == nil {
			t.Errorf("%s: LoRaParamsOf = %+v, nil error; want an error", tt.name, got)
		}
	}
}

func TestTextPacketBytesMatchesProtobuf(t *testing.T) {
	for n := 0; n <= 300; n++ {
		d := &meshpb.Data{
			Portnum:  meshpb.PortNum_TEXT_MESSAGE_APP,
			Payload:  bytes.Repeat([]byte{'x'}, n),
			Bitfield: proto.Uint32(1),
		}
		enc, err := proto.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		if want := 16 + len(enc); TextPacketBytes(n) != want {
			t.Fatalf("TextPacketBytes(%d) = %d, want %d", n, TextPacketBytes(n), want)
		}
		overhead := PacketOverhead
		if n < 128 {
			overhead--
		}
		if n > 0 && TextPacketBytes(n)-n != overhead {
			t.Errorf("TextPacketBytes(%d) - %d = %d, PacketOverhead gives %d", n, n, TextPacketBytes(n)-n, overhead)
		}
	}
	// With the bitfield, 232 bytes of text fill the 255-byte LoRa maximum
	// and the 233-byte Data.payload limit no longer fits.
	if TextPacketBytes(232) != 255 || TextPacketBytes(233) != 256 {
		t.Errorf("232 and 233 bytes of text take %d and %d bytes, want 255 and 256", TextPacketBytes(232), TextPacketBytes(233))
	}
}

func TestTextAirtime(t *testing.T) {
	for _, row := range airtimeTable {
		p := LoRaParams{SF: row.sf, BandwidthKHz: row.bw, CR: row.cr, Preamble: 16}
		prev := TextAirtime(p, 0)
		for n := 1; n <= 233; n++ {
			cur := TextAirtime(p, n)
			if cur < prev {
				t.Fatalf("%s: TextAirtime(%d) = %v < TextAirtime(%d) = %v", row.preset, n, cur, n-1, prev)
			}
			if cur != TimeOnAir(p, TextPacketBytes(n)) {
				t.Fatalf("%s: TextAirtime(%d) != TimeOnAir of its packet", row.preset, n)
			}
			prev = cur
		}
		if TextAirtime(p, 232) != TimeOnAir(p, 255) {
			t.Errorf("%s: the largest text does not cost a full frame", row.preset)
		}
	}

	lf, err := LoRaParamsOf(presetConfig(meshpb.Config_LoRaConfig_LONG_FAST, meshpb.Config_LoRaConfig_US))
	if err != nil {
		t.Fatal(err)
	}
	got := TextAirtime(lf, 200)
	if got < 1900*time.Millisecond || got > 2200*time.Millisecond {
		t.Errorf("200-byte text on LongFast: %v, want about 1.9-2.2 s", got)
	}
	// 223 bytes on air: 8 + ceil((8·223 − 44 + 44)/44)·5 = 213 symbols, plus
	// 20.25 of preamble, of 8.192 ms each.
	if want := time.Duration(233.25 * 8192 * float64(time.Microsecond)); got != want {
		t.Errorf("200-byte text on LongFast: %v, want %v by the formula", got, want)
	}
}

func TestDutyCycle(t *testing.T) {
	tests := []struct {
		region meshpb.Config_LoRaConfig_RegionCode
		want   float64
	}{
		{meshpb.Config_LoRaConfig_EU_868, 0.10},
		{meshpb.Config_LoRaConfig_EU_433, 0.10},
		{meshpb.Config_LoRaConfig_UA_868, 0.01},
		{meshpb.Config_LoRaConfig_UA_433, 0.10},
		{meshpb.Config_LoRaConfig_TH, 0.10},
		{meshpb.Config_LoRaConfig_EU_866, 0.025},
		{meshpb.Config_LoRaConfig_EU_N_868, 0.10},
		{meshpb.Config_LoRaConfig_US, 1},
		{meshpb.Config_LoRaConfig_ANZ, 1},
		{meshpb.Config_LoRaConfig_RU, 1},
		{meshpb.Config_LoRaConfig_LORA_24, 1},
		{meshpb.Config_LoRaConfig_ITU1_2M, 1},
		{meshpb.Config_LoRaConfig_UNSET, 1},
		{meshpb.Config_LoRaConfig_RegionCode(999), 1},
	}
	for _, tt := range tests {
		if got := DutyCycle(tt.region); got != tt.want {
			t.Errorf("DutyCycle(%v) = %v, want %v", tt.region, got, tt.want)
		}
	}
}

// budgetStep is one call on an AirtimeBudget at an offset from a base time.
type budgetStep struct {
	op   byte // 's' Spend, 'w' Wait, 'u' Used
	at   time.Duration
	cost time.Duration
	want time.Duration // for 'w' and 'u'
}

func TestAirtimeBudgetScenarios(t *testing.T) {
	const (
		ms = time.Millisecond
		s  = time.Second
	)
	// A minute's window with 6 s of allowance (10 %); spends less than
	// 60 s/1024 ≈ 58.6 ms apart share a record.
	tests := []struct {
		name              string
		window, allowance time.Duration
		steps             []budgetStep
	}{
		{"empty budget fits up to the allowance", time.Minute, 6 * s, []budgetStep{
			{'w', 0, 6 * s, 0},
			{'w', 0, 1 * ms, 0},
			{'u', 0, 0, 0},
		}},
		{"fits while under the allowance", time.Minute, 6 * s, []budgetStep{
			{'s', 0, 2 * s, 0},
			{'s', 1 * s, 3 * s, 0},
			{'u', 2 * s, 0, 5 * s},
			{'w', 2 * s, 1 * s, 0},
			{'s', 2 * s, 1 * s, 0},
			{'u', 2 * s, 0, 6 * s},
		}},
		{"must wait until enough leaves the window", time.Minute, 6 * s, []budgetStep{
			{'s', 0, 4 * s, 0},
			{'s', 10 * s, 2 * s, 0},
			{'w', 20 * s, 1 * s, 40 * s}, // the 4 s at 0 leave at 60 s
			{'w', 20 * s, 4 * s, 40 * s},
			{'w', 20 * s, 5 * s, 50 * s}, // needs both gone: 70 s
			{'w', 20 * s, 6 * s, 50 * s},
			{'w', 59*s + 999*ms, 1 * s, 1 * ms},
			{'w', 60 * s, 1 * s, 0}, // exactly at the edge it has left
			{'u', 60 * s, 0, 2 * s},
			{'w', 65 * s, 5 * s, 5 * s},
		}},
		{"window slides", time.Minute, 6 * s, []budgetStep{
			{'s', 0, 6 * s, 0},
			{'w', 30 * s, 1, 30 * s},
			{'u', 59*s + 999*ms, 0, 6 * s},
			{'u', 60 * s, 0, 0},
			{'w', 60 * s, 6 * s, 0},
			{'s', 60 * s, 3 * s, 0},
			{'s', 90 * s, 3 * s, 0},
			{'w', 100 * s, 3 * s, 20 * s},
			{'u', 120 * s, 0, 3 * s},
			{'u', 150 * s, 0, 0},
		}},
		{"cost larger than the allowance never fits", time.Minute, 6 * s, []budgetStep{
			{'w', 0, 6*s + 1, NeverFits},
			{'s', 0, 1 * s, 0},
			{'w', 0, 10 * s, NeverFits},
			{'w', time.Hour, 6*s + 1, NeverFits},
		}},
		{"zero cost always fits", time.Minute, 6 * s, []budgetStep{
			{'s', 0, 6 * s, 0},
			{'w', 1 * s, 0, 0},
			{'w', 1 * s, -1 * s, 0},
			{'s', 1 * s, -1 * s, 0}, // ignored
			{'u', 1 * s, 0, 6 * s},
		}},
		{"spending past the allowance is recorded", time.Minute, 6 * s, []budgetStep{
			{'s', 0, 10 * s, 0},
			{'u', 1 * s, 0, 10 * s},
			{'w', 1 * s, 1 * ms, 59 * s},
		}},
		{"close spends share a record that leaves with the latest", time.Minute, 6 * s, []budgetStep{
			{'s', 0, 1 * s, 0},
			{'s', 10 * ms, 1 * s, 0},
			{'s', 1 * s, 1 * s, 0},
			{'w', 2 * s, 4 * s, 58*s + 10*ms}, // both of the first two leave at 60.01 s
			{'u', 60 * s, 0, 3 * s},
			{'u', 60*s + 10*ms, 0, 1 * s},
		}},
		{"time going back counts as the latest time", time.Minute, 6 * s, []budgetStep{
			{'s', 10 * s, 1 * s, 0},
			{'s', 5 * s, 1 * s, 0}, // recorded at 10 s
			{'u', 69*s + 999*ms, 0, 2 * s},
			{'w', 69*s + 999*ms, 5 * s, 1 * ms},
			{'w', 69 * s, 5 * s, 1 * s},
			{'u', 70 * s, 0, 0},
			{'w', 65 * s, 6 * s, 5 * s}, // the budget is at 70 s already
		}},
		{"zero allowance", time.Minute, 0, []budgetStep{
			{'w', 0, 1, NeverFits},
			{'w', 0, 0, 0},
		}},
		{"zero window forgets at once", 0, 1 * s, []budgetStep{
			{'s', 0, 1 * s, 0},
			{'u', 0, 0, 0},
			{'w', 0, 1 * s, 0},
		}},
	}
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tt := range tests {
		b := NewAirtimeBudget(tt.window, tt.allowance)
		for i, st := range tt.steps {
			now := base.Add(st.at)
			switch st.op {
			case 's':
				b.Spend(now, st.cost)
			case 'w':
				if got := b.Wait(now, st.cost); got != st.want {
					t.Errorf("%s: step %d: Wait(+%v, %v) = %v, want %v", tt.name, i, st.at, st.cost, got, st.want)
				}
			case 'u':
				if got := b.Used(now); got != st.want {
					t.Errorf("%s: step %d: Used(+%v) = %v, want %v", tt.name, i, st.at, got, st.want)
				}
			}
		}
	}
}

// checkBudgetRun drives a budget with (gap, cost) pairs: at each step it
// moves time on by gap, asks Wait, and either spends at once (Wait 0) or
// moves to the time Wait named and spends there. It fails if Wait's delay is
// not the earliest by the budget's own count, if a spend made when Wait said
// 0 ever takes the airtime of any window over the allowance, or if the
// budget keeps more records than its bound.
func checkBudgetRun(t *testing.T, window, allowance time.Duration, gaps, costs []time.Duration) {
	t.Helper()
	b := NewAirtimeBudget(window, allowance)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type spend struct {
		at   time.Time
		cost time.Duration
	}
	var spent []spend
	oldest := 0                // first spend still inside the window ending at now
	var inWindow time.Duration // airtime of spent[oldest:]
	for i := range gaps {
		now = now.Add(gaps[i])
		cost := costs[i]
		d := b.Wait(now, cost)
		switch {
		case d == NeverFits:
			if cost <= allowance {
				t.Fatalf("step %d: Wait = NeverFits for %v within allowance %v", i, cost, allowance)
			}
			continue
		case cost > allowance && cost > 0:
			t.Fatalf("step %d: Wait = %v for %v over allowance %v", i, d, cost, allowance)
		case d < 0:
			t.Fatalf("step %d: Wait = %v", i, d)
		case d > 0:
			if d > window {
				t.Fatalf("step %d: Wait = %v, longer than the window %v", i, d, window)
			}
			if b.Wait(now.Add(d-1), cost) == 0 {
				t.Fatalf("step %d: Wait = %v, but it already fits 1ns earlier", i, d)
			}
			now = now.Add(d)
			if got := b.Wait(now, cost); got != 0 {
				t.Fatalf("step %d: after waiting %v, Wait = %v", i, d, got)
			}
		}
		if cost <= 0 {
			continue
		}
		b.Spend(now, cost)
		spent = append(spent, spend{now, cost})
		inWindow += cost
		for oldest < len(spent) && !spent[oldest].at.Add(window).After(now) {
			inWindow -= spent[oldest].cost
			oldest++
		}
		// The busiest windows end at a spend, so checking after each one
		// covers them all.
		if inWindow > allowance {
			t.Fatalf("step %d: %v of airtime in the window ending at spend %d, allowance %v", i, inWindow, len(spent)-1, allowance)
		}
		if used := b.Used(now); used < inWindow || used > allowance {
			t.Fatalf("step %d: Used = %v; true airtime %v, allowance %v", i, used, inWindow, allowance)
		}
		if len(b.spends) > budgetSlots+2 {
			t.Fatalf("step %d: %d records, bound %d", i, len(b.spends), budgetSlots+2)
		}
	}
}

func TestAirtimeBudgetProperty(t *testing.T) {
	for seed := range uint64(20) {
		r := rand.New(rand.NewPCG(seed, 0x5eed))
		window := time.Duration(1+r.IntN(3600)) * time.Second
		allowance := time.Duration(r.Int64N(int64(window)/5)) + 1
		n := 3000
		gaps, costs := make([]time.Duration, n), make([]time.Duration, n)
		for i := range n {
			switch r.IntN(4) {
			case 0:
				gaps[i] = 0
			case 1:
				gaps[i] = time.Duration(r.Int64N(int64(window) / 500))
			default:
				gaps[i] = time.Duration(r.Int64N(int64(window) / 10))
			}
			costs[i] = time.Duration(r.Int64N(int64(allowance)*6/5)) + 1
		}
		checkBudgetRun(t, window, allowance, gaps, costs)
	}
	// Many tiny spends, faster than the window's record granularity, keep
	// the record count bounded.
	n := 20000
	gaps, costs := make([]time.Duration, n), make([]time.Duration, n)
	for i := range n {
		gaps[i] = time.Millisecond
		costs[i] = time.Microsecond
	}
	checkBudgetRun(t, 10*time.Second, time.Second, gaps, costs)
}

func FuzzAirtimeBudget(f *testing.F) {
	f.Add(uint16(1000), uint16(100), []byte{0, 10, 0, 50, 1, 0, 0, 60, 0, 0, 0, 100})
	f.Add(uint16(60000), uint16(6000), bytes.Repeat([]byte{0, 200, 7, 208}, 50))
	f.Add(uint16(10), uint16(10), []byte{0, 0, 0, 11, 0, 0, 0, 10, 0, 1, 0, 1})
	f.Add(uint16(0), uint16(52), []byte("00\x000")) // zero window
	f.Fuzz(func(t *testing.T, windowMs, allowanceMs uint16, ops []byte) {
		window := time.Duration(windowMs) * time.Millisecond
		allowance := time.Duration(allowanceMs) * time.Millisecond
		var gaps, costs []time.Duration
		for ; len(ops) >= 4; ops = ops[4:] {
			gaps = append(gaps, time.Duration(int(ops[0])<<8|int(ops[1]))*time.Millisecond)
			costs = append(costs, time.Duration(int(ops[2])<<8|int(ops[3]))*time.Millisecond)
		}
		checkBudgetRun(t, window, allowance, gaps, costs)
	})
}
