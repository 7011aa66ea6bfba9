package ops

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every metric name the bridge registers.
const Namespace = "sovereign_bridge"

// Kind is the Prometheus type of a metric.
type Kind int

const (
	// Counter only goes up (until the process restarts).
	Counter Kind = iota + 1
	// Gauge goes up and down.
	Gauge
)

func (k Kind) valueType() prometheus.ValueType {
	if k == Counter {
		return prometheus.CounterValue
	}
	return prometheus.GaugeValue
}

// Labels are fixed label pairs of one series, such as {"side": "radio"}.
type Labels map[string]string

// Metrics is the bridge's set of metrics. Each series is read from a
// callback at scrape time, so the gateways keep their own atomic counters
// and nothing is copied in between. The callbacks run on the scraping
// goroutine and must be safe for concurrent use.
//
// Metrics has its own registry: two bridges in one process (tests) do not
// collide, and nothing else in the process can add series to it.
type Metrics struct {
	reg     *prometheus.Registry
	catalog map[string]*Described
}

// Described is what one metric name stands for: its kind and, for each
// label, the values registered. A label whose values are only known at run
// time (a Family's) has the single value "*".
type Described struct {
	Name   string // without the Namespace prefix
	Kind   Kind
	Help   string
	Labels map[string][]string
}

// NewMetrics returns a registry holding the Go runtime and process
// collectors and none of the bridge's metrics yet.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return &Metrics{reg: reg, catalog: map[string]*Described{}}
}

// Catalog lists the bridge's own metrics, sorted by name, so the
// documentation can be checked against what is really registered.
func (m *Metrics) Catalog() []Described {
	out := make([]Described, 0, len(m.catalog))
	for _, d := range m.catalog {
		out = append(out, *d)
	}
	slices.SortFunc(out, func(a, b Described) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (m *Metrics) describe(name, help string, kind Kind, labels Labels) {
	d := m.catalog[name]
	if d == nil {
		d = &Described{Name: name, Kind: kind, Help: help, Labels: map[string][]string{}}
		m.catalog[name] = d
	}
	for l, v := range labels {
		if !slices.Contains(d.Labels[l], v) {
			d.Labels[l] = append(d.Labels[l], v)
			slices.Sort(d.Labels[l])
		}
	}
}

// Register adds the series Namespace_name{labels} of the given kind, whose
// value f returns. Series of one name may differ in their label values but
// must agree on the label names and help text.
func (m *Metrics) Register(name, help string, kind Kind, labels Labels, f func() float64) error {
	if err := checkNames(name, labels); err != nil {
		return err
	}
	opts := prometheus.Opts{Namespace: Namespace, Name: name, Help: help, ConstLabels: prometheus.Labels(labels)}
	var c prometheus.Collector
	if kind == Counter {
		c = prometheus.NewCounterFunc(prometheus.CounterOpts(opts), f)
	} else {
		c = prometheus.NewGaugeFunc(prometheus.GaugeOpts(opts), f)
	}
	if err := m.reg.Register(c); err != nil {
		return err
	}
	m.describe(name, help, kind, labels)
	return nil
}

// Counter registers a counter read from f, typically the Load method of an
// atomic.Uint64. Like prometheus.MustRegister it panics on a bad or
// duplicate name: names are constants, so that is a bug any test building
// the metrics finds.
func (m *Metrics) Counter(name, help string, labels Labels, f func() uint64) {
	must(m.Register(name, help, Counter, labels, func() float64 { return float64(f()) }))
}

// Gauge registers a gauge read from f. It panics like Counter.
func (m *Metrics) Gauge(name, help string, labels Labels, f func() float64) {
	must(m.Register(name, help, Gauge, labels, f))
}

// Family registers the series Namespace_name{label="..."} whose label values
// are only known at run time: at every scrape f returns a value for each
// label value, such as NAK counts by reason. It panics like Counter.
func (m *Metrics) Family(name, help string, kind Kind, label string, f func() map[string]float64) {
	must(checkNames(name, Labels{label: ""}))
	must(m.reg.Register(&family{
		desc: prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, []string{label}, nil),
		kind: kind.valueType(),
		f:    f,
	}))
	m.describe(name, help, kind, Labels{label: "*"})
}

// Handler serves the metrics in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// family is a collector of one metric with one variable label.
type family struct {
	desc *prometheus.Desc
	kind prometheus.ValueType
	f    func() map[string]float64
}

func (c *family) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *family) Collect(ch chan<- prometheus.Metric) {
	for value, v := range c.f() {
		m, err := prometheus.NewConstMetric(c.desc, c.kind, v, value)
		if err != nil {
			m = prometheus.NewInvalidMetric(c.desc, err)
		}
		ch <- m
	}
}

// checkNames insists on the classic name syntax, [a-zA-Z_][a-zA-Z0-9_]*.
// The client library also accepts any UTF-8, which older Prometheus servers
// and other scrapers cannot read.
func checkNames(name string, labels Labels) error {
	if !classicName(name) {
		return fmt.Errorf("metric name %q: use letters, digits and underscores", name)
	}
	for l := range labels {
		if !classicName(l) {
			return fmt.Errorf("metric %s: label name %q: use letters, digits and underscores", name, l)
		}
	}
	return nil
}

func classicName(s string) bool {
	for i, c := range s {
		if !(c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9') {
			return false
		}
	}
	return s != ""
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}
