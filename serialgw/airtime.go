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
//
// The rolling budget alone would let a flood spend the whole hour's share
// at once and then hold everything, room chat included, for the rest of the
// hour. A token bucket over airtime spreads it: at most a burst (a tenth of
// the share) at once, refilled at the share's own rate, so a flood gets its
// burst and then a steady trickle, and the share lasts the hour.
type airtime struct {
	key    string // region and modem settings the budget was made for
	params mesh.LoRaParams
	duty   float64
	budget *mesh.AirtimeBudget

	burst  time.Duration // the bucket's size
	rate   float64       // airtime earned per unit of time: allowance / window
	tokens time.Duration // airtime in the bucket; below 0 after a packet larger than the burst
	filled time.Time     // when tokens was last brought up to date

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
	a.burst = allowance / burstDivisor
	a.rate = 0
	if window > 0 {
		a.rate = float64(allowance) / float64(window)
	}
	a.tokens, a.filled = a.burst, time.Time{}
}

// burstDivisor sets the bucket's burst as a share of the window's
// allowance: in EU_868 on LongFast, 18 s of the hour's 180 s, about eight
// full-size packets, far more than a few room messages need.
const burstDivisor = 10

// refill brings the bucket up to now.
func (a *airtime) refill(now time.Time) {
	if !a.filled.IsZero() && now.After(a.filled) {
		a.tokens = min(a.burst, a.tokens+time.Duration(float64(now.Sub(a.filled))*a.rate))
	}
	if a.filled.IsZero() || now.After(a.filled) {
		a.filled = now
	}
}

// bucketWait is how long a packet of the given cost waits for the bucket.
// A packet larger than the whole burst goes once the bucket is full, and
// leaves it in debt, so the long-run rate holds for every size.
func (a *airtime) bucketWait(now time.Time, cost time.Duration) time.Duration {
	a.refill(now)
	need := min(cost, a.burst)
	if a.tokens >= need || a.rate <= 0 {
		return 0
	}
	// Rounded up, so the timer does not fire a hair early.
	return time.Duration(math.Ceil(float64(need-a.tokens) / a.rate))
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
	if w != mesh.NeverFits {
		w = max(w, a.bucketWait(now, cost))
	}
	// The radio counts everything it sends, relays included; when it is
	// close to the legal limit, hold off whatever our own budget says.
	if a.duty < 1 && load(&a.airUtilTx) >= 90*a.duty {
		w = max(w, time.Minute)
	}
	return w
}

// refresh records the airtime used in the window as of now: spends leave
// the window as time passes, not only when the next packet goes.
func (a *airtime) refresh(now time.Time) {
	if a.budget != nil {
		a.used.Store(int64(a.budget.Used(now)))
	}
}

func (a *airtime) spend(now time.Time, cost time.Duration) {
	if a.budget != nil {
		a.budget.Spend(now, cost)
		a.used.Store(int64(a.budget.Used(now)))
		a.refill(now)
		a.tokens -= cost
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
