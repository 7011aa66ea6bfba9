package mesh

//lint:file-ignore SA1019 LongSlow and VeryLongSlow are deprecated presets, but radios still run them and their airtime must be known.

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
)

// LoRaParams are the modulation parameters that set time on air.
type LoRaParams struct {
	SF           int     // spreading factor, 7..12
	BandwidthKHz float64 // e.g. 250, 62.5, 812.5
	CR           int     // coding rate denominator: 5..8 for 4/5..4/8
	Preamble     int     // preamble length in symbols (16; 12 on LORA_24)
}

// Preamble lengths (FW RadioInterface.h preambleLength).
const (
	preambleSubGHz = 16
	preambleLoRa24 = 12
	// lora24Scale is the bandwidth factor of the 2.4 GHz "wide" region
	// LORA_24 over the sub-GHz presets (250 kHz -> 812.5 kHz).
	lora24Scale = 3.25
)

// presetParams are the sub-GHz parameters of each modem preset (FW
// MeshRadio.h modemPresetToParams). VERY_LONG_SLOW has the value it had
// before it was deprecated in 2.5. The TINY presets use 15.6 kHz, the value
// the firmware hands RadioLib (the radio's 15.625 kHz), which is also what
// reproduces the reference airtimes.
var presetParams = map[meshpb.Config_LoRaConfig_ModemPreset]struct {
	sf int
	bw float64
	cr int
}{
	meshpb.Config_LoRaConfig_SHORT_TURBO:    {7, 500, 5},
	meshpb.Config_LoRaConfig_SHORT_FAST:     {7, 250, 5},
	meshpb.Config_LoRaConfig_SHORT_SLOW:     {8, 250, 5},
	meshpb.Config_LoRaConfig_MEDIUM_FAST:    {9, 250, 5},
	meshpb.Config_LoRaConfig_MEDIUM_SLOW:    {10, 250, 5},
	meshpb.Config_LoRaConfig_MEDIUM_TURBO:   {9, 500, 5},
	meshpb.Config_LoRaConfig_LONG_TURBO:     {11, 500, 8},
	meshpb.Config_LoRaConfig_LONG_FAST:      {11, 250, 5},
	meshpb.Config_LoRaConfig_LONG_MODERATE:  {11, 125, 8},
	meshpb.Config_LoRaConfig_LONG_SLOW:      {12, 125, 8},
	meshpb.Config_LoRaConfig_VERY_LONG_SLOW: {12, 62.5, 8},
	meshpb.Config_LoRaConfig_LITE_FAST:      {9, 125, 5},
	meshpb.Config_LoRaConfig_LITE_SLOW:      {10, 125, 5},
	meshpb.Config_LoRaConfig_NARROW_FAST:    {7, 62.5, 6},
	meshpb.Config_LoRaConfig_NARROW_SLOW:    {8, 62.5, 6},
	meshpb.Config_LoRaConfig_TINY_FAST:      {7, 15.6, 5},
	meshpb.Config_LoRaConfig_TINY_SLOW:      {8, 15.6, 6},
}

// customBandwidths maps the LoRaConfig.bandwidth values a custom
// configuration may use to kHz: the plain 125/250/500 and the firmware's
// codes for bandwidths that are not whole kHz (FW MeshRadio.h bwCodeToKHz).
// Anything else is not a LoRa bandwidth the radio can be set to.
var customBandwidths = map[uint32]float64{
	31:   31.25,
	62:   62.5,
	125:  125,
	200:  203.125,
	250:  250,
	400:  406.25,
	500:  500,
	800:  812.5,
	1600: 1625,
}

// ErrNoLoRaConfig is returned by LoRaParamsOf for a nil config.
var ErrNoLoRaConfig = errors.New("no LoRa config")

// LoRaParamsOf gives the modulation parameters of a LoRa config: those of
// its modem preset when use_preset is set, else its custom bandwidth,
// spread_factor and coding_rate. On LORA_24 the preamble is 12 symbols and
// a preset's bandwidth is 3.25 times its sub-GHz one (applied to every
// preset; the firmware defines it for the classic ones, e.g. LongFast
// 812.5 kHz); a custom bandwidth is used as given. It fails for an unknown
// preset, and for a custom bandwidth that is neither 125, 250 or 500 nor one
// of the codes 31, 62, 200, 400, 800, 1600, a spread factor outside 7..12 or
// a coding rate outside 5..8.
func LoRaParamsOf(c *meshpb.Config_LoRaConfig) (LoRaParams, error) {
	if c == nil {
		return LoRaParams{}, ErrNoLoRaConfig
	}
	p := LoRaParams{Preamble: preambleSubGHz}
	lora24 := c.GetRegion() == meshpb.Config_LoRaConfig_LORA_24
	if lora24 {
		p.Preamble = preambleLoRa24
	}
	if c.GetUsePreset() {
		pp, ok := presetParams[c.GetModemPreset()]
		if !ok {
			return LoRaParams{}, fmt.Errorf("unknown modem preset %d", int32(c.GetModemPreset()))
		}
		p.SF, p.BandwidthKHz, p.CR = pp.sf, pp.bw, pp.cr
		if lora24 {
			p.BandwidthKHz *= lora24Scale
		}
		return p, nil
	}
	bw, ok := customBandwidths[c.GetBandwidth()]
	if !ok {
		return LoRaParams{}, fmt.Errorf("invalid custom LoRa bandwidth %d", c.GetBandwidth())
	}
	p.BandwidthKHz = bw
	if sf := c.GetSpreadFactor(); sf >= 7 && sf <= 12 {
		p.SF = int(sf)
	} else {
		return LoRaParams{}, fmt.Errorf("invalid custom LoRa spread factor %d (want 7..12)", sf)
	}
	if cr := c.GetCodingRate(); cr >= 5 && cr <= 8 {
		p.CR = int(cr)
	} else {
		return LoRaParams{}, fmt.Errorf("invalid custom LoRa coding rate %d (want 5..8 for 4/5..4/8)", cr)
	}
	return p, nil
}

// Validate reports whether TimeOnAir can use p: spreading factor 7..12,
// coding rate 5..8, a positive finite bandwidth and a non-negative preamble.
func (p LoRaParams) Validate() error {
	switch {
	case p.SF < 7 || p.SF > 12:
		return fmt.Errorf("invalid LoRa spread factor %d (want 7..12)", p.SF)
	case p.CR < 5 || p.CR > 8:
		return fmt.Errorf("invalid LoRa coding rate %d (want 5..8)", p.CR)
	case !(p.BandwidthKHz > 0) || math.IsInf(p.BandwidthKHz, 0):
		return fmt.Errorf("invalid LoRa bandwidth %v kHz", p.BandwidthKHz)
	case p.Preamble < 0:
		return fmt.Errorf("invalid LoRa preamble %d", p.Preamble)
	}
	return nil
}

// symbolNanos is T_sym = 2^SF / BW ms, in nanoseconds.
func (p LoRaParams) symbolNanos() float64 {
	return math.Ldexp(1e6, p.SF) / p.BandwidthKHz
}

// SymbolTime is the duration of one symbol, 2^SF / BW.
func (p LoRaParams) SymbolTime() time.Duration {
	return time.Duration(math.Round(p.symbolNanos()))
}

// LowDataRateOptimize is whether the radio turns on low-data-rate
// optimisation, which it does when a symbol lasts 16 ms or more (RadioLib's
// automatic rule).
func (p LoRaParams) LowDataRateOptimize() bool {
	return math.Ldexp(1, p.SF)/p.BandwidthKHz >= 16
}

// TimeOnAir is the time on air of one LoRa frame of phyPayloadBytes bytes
// (the 16-byte Meshtastic header plus the encrypted Data) by the Semtech
// formula as RadioLib computes it, with Meshtastic's settings: explicit
// header, CRC on, and low-data-rate optimisation when a symbol lasts 16 ms
// or more:
//
//	T = (n_pre + 4.25)·T_sym + (8 + max(ceil((8·PL − 4·SF + 44) / (4·(SF − 2·DE)))·CR, 0))·T_sym
//
// with CR the denominator 5..8. The result is rounded to the nanosecond. A
// negative size counts as 0; sizes over the LoRa maximum of 255 bytes are
// computed all the same. TimeOnAir returns 0 for params that fail Validate,
// so use LoRaParamsOf (or check Validate) before budgeting with it.
func TimeOnAir(p LoRaParams, phyPayloadBytes int) time.Duration {
	if p.Validate() != nil {
		return 0
	}
	pl := max(phyPayloadBytes, 0)
	de := 0
	if p.LowDataRateOptimize() {
		de = 1
	}
	const crc, ih = 1, 0
	num := 8*pl - 4*p.SF + 28 + 16*crc - 20*ih
	den := 4 * (p.SF - 2*de)
	payloadSymbols := 8
	if num > 0 {
		payloadSymbols += (num + den - 1) / den * p.CR
	}
	// Count in quarter symbols so that the preamble's 4.25 stays exact.
	quarters := 4*p.Preamble + 17 + 4*payloadSymbols
	return time.Duration(math.Round(float64(quarters) * p.symbolNanos() / 4))
}

// loraHeaderLen is the Meshtastic on-air header that precedes the encrypted
// Data (FW RadioInterface.h PacketHeader): to, from, id (4 bytes each),
// flags, channel hash, next_hop, relay_node (1 byte each). Channel
// encryption (AES-CTR) does not change the length of the Data.
const loraHeaderLen = 16

// PacketOverhead is the on-air bytes a text packet adds to its payload at
// most, for payloads of 128 to 233 bytes; shorter payloads (whose length
// varint is one byte) get one byte less, and TextPacketBytes gives the exact
// size. It counts:
//
//   - the 16-byte on-air header;
//   - Data.portnum: tag and a one-byte varint (2 bytes; TEXT_MESSAGE_APP and
//     every port number below 128);
//   - Data.payload: tag (1 byte) and length varint (2 bytes from 128 bytes);
//   - Data.bitfield, which firmware since 2.5 always sets: tag and a one-byte
//     varint (2 bytes).
//
// Not counted, as a bridged text does not carry them: want_response, dest,
// source, request_id, reply_id and emoji (a threaded reply or a reaction
// adds 5 bytes for each fixed32 it sets), the 12 bytes of PKI encryption on
// direct messages, and the 66 bytes of a develop firmware's XEdDSA signature.
//
// With the bitfield, 232 bytes of text fill the 255-byte LoRa maximum: the
// 233-byte Data.payload limit predates the bitfield and no longer fits.
const PacketOverhead = loraHeaderLen + 2 + 1 + 2 + 2

// TextPacketBytes is the exact LoRa PHY payload of a TEXT_MESSAGE_APP packet
// carrying textBytes bytes of text: the 16-byte header plus the encoded Data
// with portnum, payload and bitfield as PacketOverhead describes. An empty
// text has no payload field at all, as proto3 omits empty bytes.
func TextPacketBytes(textBytes int) int {
	n := loraHeaderLen + 2 + 2 // header, portnum, bitfield
	if textBytes > 0 {
		n += 1 + varintLen(uint64(textBytes)) + textBytes
	}
	return n
}

// varintLen is the length of v as a protobuf varint.
func varintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// TextAirtime is the time on air of one TEXT_MESSAGE_APP packet carrying
// textBytes bytes of text (one transmission; every rebroadcasting hop costs
// the same again).
func TextAirtime(p LoRaParams, textBytes int) time.Duration {
	return TimeOnAir(p, TextPacketBytes(textBytes))
}

// dutyCycles are the regions whose duty cycle is below 100 % (FW 2.7.26
// RadioInterface.cpp regions[], plus develop's EU_866 and EU_N_868).
var dutyCycles = map[meshpb.Config_LoRaConfig_RegionCode]float64{
	meshpb.Config_LoRaConfig_EU_433: 0.10,
	meshpb.Config_LoRaConfig_EU_868: 0.10,
	meshpb.Config_LoRaConfig_TH:     0.10,
	meshpb.Config_LoRaConfig_UA_433: 0.10,
	meshpb.Config_LoRaConfig_UA_868: 0.01,
	// 2.5 % for clients; the firmware allows ROUTER and ROUTER_LATE 10 %.
	// A bridge is a client, and the lower value is the safe one.
	meshpb.Config_LoRaConfig_EU_866:   0.025,
	meshpb.Config_LoRaConfig_EU_N_868: 0.10,
}

// DutyCycle is the share of time a radio may transmit in region, as a
// fraction: 0.10 for EU_868, 0.01 for UA_868, 1.0 for US. Regions without a
// limit, and regions the firmware tables here do not know (UNSET, EU_874,
// EU_917, later additions), give 1.0.
func DutyCycle(region meshpb.Config_LoRaConfig_RegionCode) float64 {
	if d, ok := dutyCycles[region]; ok {
		return d
	}
	return 1.0
}

// NeverFits is what AirtimeBudget.Wait returns for a cost larger than the
// whole allowance: such a packet cannot be sent within the budget however
// long one waits. It is the largest Duration, so a caller that just sleeps
// for it never sends.
const NeverFits = time.Duration(math.MaxInt64)

// budgetSlots bounds the records an AirtimeBudget keeps: spends closer
// together than window/budgetSlots share one record.
const budgetSlots = 1024

// airtimeSpend is the airtime spent from first to last, counted as if all
// of it had been spent at last.
type airtimeSpend struct {
	first, last time.Time
	cost        time.Duration
}

// AirtimeBudget tracks airtime spent in a rolling window and says how long
// to wait before spending more, so that the airtime spent in any window
// never exceeds the allowance. A spend at time s counts in the windows
// (t−window, t] that contain s, so it stops counting at exactly s+window.
//
// Memory is bounded by coalescing rather than by fixed buckets: a spend
// within window/1024 of the start of the newest record joins that record,
// which then counts all of its airtime as spent at the latest of those
// times. That only ever makes airtime count for longer than it should (by
// less than window/1024, 3.5 s of an hour), never shorter, so waits stay
// safe; spends farther apart are tracked exactly. As record starts are at
// least window/1024 apart and records are dropped as soon as they leave the
// window, at most 1026 are live, whatever the rate of spending. (Fixed
// buckets would bound memory too, but would make every wait end on a bucket
// edge instead of when the airtime actually leaves the window.)
//
// Times should come from time.Now (whose monotonic reading never goes
// back); a time earlier than one already seen is taken as that latest time.
// An AirtimeBudget is not safe for concurrent use; make one with
// NewAirtimeBudget.
type AirtimeBudget struct {
	window, allowance, slot time.Duration
	now                     time.Time      // latest time seen
	spends                  []airtimeSpend // oldest first, all in the window
	used                    time.Duration  // sum of spends' costs
}

// NewAirtimeBudget makes a budget allowing allowance of airtime in any
// window of the given length; for a share of a region's duty cycle,
// allowance = window × DutyCycle(region) × share. Negative arguments count
// as 0.
func NewAirtimeBudget(window time.Duration, allowance time.Duration) *AirtimeBudget {
	window, allowance = max(window, 0), max(allowance, 0)
	return &AirtimeBudget{window: window, allowance: allowance, slot: window / budgetSlots}
}

// advance moves the budget's clock to now, unless it is already later, and
// drops the spends that have left the window.
func (b *AirtimeBudget) advance(now time.Time) {
	if now.After(b.now) {
		b.now = now
	}
	i := 0
	for i < len(b.spends) && !b.spends[i].last.Add(b.window).After(b.now) {
		b.used -= b.spends[i].cost
		i++
	}
	if i == len(b.spends) {
		b.spends = b.spends[:0]
	} else {
		// Re-slicing leaves the dropped records in the backing array
		// only until the next append outgrows it, which re-allocates to
		// the live records.
		b.spends = b.spends[i:]
	}
}

// Wait is how long after now a spend of cost fits in the budget: 0 if it
// fits now, else the earliest delay after which enough earlier airtime has
// left the window. A cost of 0 or less always fits. A cost larger than the
// allowance never fits, and Wait returns NeverFits for it.
func (b *AirtimeBudget) Wait(now time.Time, cost time.Duration) time.Duration {
	if cost <= 0 {
		return 0
	}
	if cost > b.allowance {
		return NeverFits
	}
	b.advance(now)
	excess := b.used + cost - b.allowance
	at := b.now
	for _, s := range b.spends {
		if excess <= 0 {
			break
		}
		excess -= s.cost
		at = s.last.Add(b.window)
	}
	return max(at.Sub(now), 0)
}

// Spend records cost of airtime spent at now. It records it even when it
// does not fit (airtime spent is spent), making later waits longer. A cost
// of 0 or less is ignored.
func (b *AirtimeBudget) Spend(now time.Time, cost time.Duration) {
	if cost <= 0 {
		return
	}
	b.advance(now)
	b.used += cost
	if n := len(b.spends); n > 0 {
		last := &b.spends[n-1]
		if d := b.now.Sub(last.first); d < b.slot || d == 0 {
			last.last = b.now
			last.cost += cost
			return
		}
	}
	b.spends = append(b.spends, airtimeSpend{first: b.now, last: b.now, cost: cost})
}

// Used is the airtime counted in the window that ends at now.
func (b *AirtimeBudget) Used(now time.Time) time.Duration {
	b.advance(now)
	return b.used
}
