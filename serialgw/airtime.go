package serialgw

import (
	"math"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/mesh"
	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
)

// airtime paces sending by time on air, so bridged traffic stays within a
// share of the region's duty cycle, and backs off further when the radio
// reports a busy channel. The firmware refuses (DUTY_CYCLE_LIMIT) whatever
// would exceed the hourly limit; waiting here instead means nothing is lost.
type airtime struct {
	key    string // region and modem settings the budget was made for
	params mesh.LoRaParams
	duty   float64
	budget *mesh.AirtimeBudget

	// The radio's own DeviceMetrics, as percentages (float64 bits).
	chanUtil, airUtilTx atomic.Uint64
	// For metrics: airtime used in the window and the allowance, nanoseconds.
	used, allowance atomic.Int64
}

// Airtime returns the airtime bridged packets used in the current window and
// the budget's allowance.
func (g *Gateway) Airtime() (used, allowance time.Duration) {
	return time.Duration(g.air.used.Load()), time.Duration(g.air.allowance.Load())
}

// configure sets the budget for a radio after its handshake; a radio with
// the same region and modem settings keeps the airtime already spent.
func (a *airtime) configure(lora *meshpb.Config_LoRaConfig, window time.Duration, share float64) {
	params, err := mesh.LoRaParamsOf(lora)
	if err != nil {
		params, _ = mesh.LoRaParamsOf(&meshpb.Config_LoRaConfig{UsePreset: true}) // LongFast
	}
	duty := mesh.DutyCycle(lora.GetRegion())
	key := lora.GetRegion().String() + "/" + lora.GetModemPreset().String() + "/" + params.SymbolTime().String()
	if a.budget != nil && a.key == key {
		return
	}
	a.key, a.params, a.duty = key, params, duty
	allowance := time.Duration(float64(window) * duty * share)
	a.budget = mesh.NewAirtimeBudget(window, allowance)
	a.allowance.Store(int64(allowance))
}

// cost is the time on air of a packet carrying d.
func (a *airtime) cost(d *meshpb.Data) time.Duration {
	// The firmware adds the 16-byte header and sets the bitfield (2 bytes).
	return mesh.TimeOnAir(a.params, 16+proto.Size(d)+2)
}

// wait is how long a packet of the given cost must wait for the budget.
func (a *airtime) wait(now time.Time, cost time.Duration) time.Duration {
	if a.budget == nil {
		return 0
	}
	w := a.budget.Wait(now, cost)
	// The radio counts everything it sends, relays included; when it is
	// close to the legal limit, hold off whatever our own budget says.
	if a.duty < 1 && load(&a.airUtilTx) >= 90*a.duty {
		w = max(w, time.Minute)
	}
	return w
}

func (a *airtime) spend(now time.Time, cost time.Duration) {
	if a.budget != nil {
		a.budget.Spend(now, cost)
		a.used.Store(int64(a.budget.Used(now)))
	}
}

// slowdown scales text spacing with the channel utilization the radio
// reports: above 25 % the firmware itself holds back its polite traffic,
// above 40 % even more.
func (a *airtime) slowdown() float64 {
	switch u := load(&a.chanUtil); {
	case u > 40:
		return 4
	case u > 25:
		return 2
	}
	return 1
}

// observe takes the radio's own device metrics.
func (a *airtime) observe(m *meshpb.DeviceMetrics) {
	if m.ChannelUtilization != nil {
		a.chanUtil.Store(math.Float64bits(float64(m.GetChannelUtilization())))
	}
	if m.AirUtilTx != nil {
		a.airUtilTx.Store(math.Float64bits(float64(m.GetAirUtilTx())))
	}
}

func load(v *atomic.Uint64) float64 { return math.Float64frombits(v.Load()) }
