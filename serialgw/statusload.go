package serialgw

import (
	"math"
	"time"
)

// statusLoad is what the status record says of the radio side's load:
// the packets waiting for the radio, and the airtime used in the
// duty-cycle window (to the millisecond) of its budget, in seconds.
type statusLoad struct {
	queue        int
	used, budget float64
}

// statusLoad reads the load as the metrics do: the queue's length and
// the airtime the session loop last recorded (Airtime), both safe to read
// from any goroutine.
func (g *Gateway) statusLoad() statusLoad {
	used, budget := g.Airtime()
	return statusLoad{queue: g.QueueLen(), used: seconds(used), budget: seconds(budget)}
}

func seconds(d time.Duration) float64 { return math.Round(d.Seconds()*1000) / 1000 }

// refreshStatus publishes the status record again when the load has
// changed since it was last published; the save loop calls it every
// Config.StatusInterval, so the record follows the load at most that
// often, besides what publishes it anyway (a link state, airtime holding
// packets back).
func (g *Gateway) refreshStatus() {
	load := g.statusLoad()
	g.mu.Lock()
	same := load == g.load
	g.mu.Unlock()
	if !same {
		g.republishStatus()
	}
}
