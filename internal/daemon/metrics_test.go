package daemon

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/jshiffer/lora-xmpp-bridge/internal/ops"
	"github.com/jshiffer/lora-xmpp-bridge/internal/spool"
	"github.com/jshiffer/lora-xmpp-bridge/serialgw"
	"github.com/jshiffer/lora-xmpp-bridge/xmppgw"
)

// docMetric is one row of the metrics table in internal/ops/doc.go.
type docMetric struct {
	kind   string
	labels map[string][]string // label -> values as written, "<...>" for run-time parts
}

// readMetricsTable parses the table of metric names from the ops package
// documentation: an indented block whose header row starts with "name".
func readMetricsTable(t *testing.T) map[string]docMetric {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "ops", "doc.go"))
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]docMetric{}
	inTable := false
	for _, line := range strings.Split(string(src), "\n") {
		if !strings.HasPrefix(line, "//\t") {
			if inTable {
				break
			}
			continue
		}
		fields := strings.Fields(strings.TrimPrefix(line, "//\t"))
		if len(fields) > 0 && fields[0] == "name" {
			inTable = true
			continue
		}
		if !inTable || len(fields) < 3 {
			continue
		}
		m := docMetric{kind: fields[1], labels: map[string][]string{}}
		if l, values, ok := strings.Cut(fields[2], "="); ok {
			// A run-time part such as "<room JID>" may hold spaces.
			rest := strings.Join(fields[2:], " ")
			if i := strings.Index(rest, ">"); i >= 0 && strings.Contains(rest[:i], "<") {
				values = strings.TrimPrefix(rest[:i+1], l+"=")
			}
			m.labels[l] = strings.Split(values, "|")
		}
		rows[fields[0]] = m
	}
	if len(rows) == 0 {
		t.Fatal("no metrics table found in internal/ops/doc.go")
	}
	return rows
}

var placeholder = regexp.MustCompile(`<[^>]*>`)

// documentedValue reports whether a registered label value matches a value
// as the table writes it: literally, or with "<...>" standing for any text.
func documentedValue(doc, got string) bool {
	if got == "*" { // a family's run-time values
		return placeholder.MatchString(doc) && placeholder.FindString(doc) == doc
	}
	parts := placeholder.Split(doc, -1)
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return regexp.MustCompile("^" + strings.Join(parts, ".+") + "$").MatchString(got)
}

// The table of metrics in the documentation is what the daemon registers:
// every name, kind, label and label value, nothing more and nothing less.
func TestMetricsMatchDocumentation(t *testing.T) {
	c, err := Parse([]string{"-j", "bridge@example.org", "-p", "pw", "-r", "village@conference.example.org", "-n", "meshbridge"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	xc, err := c.xmppConfig(os.ReadFile)
	if err != nil {
		t.Fatal(err)
	}
	xg, err := xmppgw.New(xc, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := serialgw.New(serialgw.Config{Device: serialgw.Device{Kind: "tcp", Addr: "127.0.0.1:4403"}}, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	store, err := spool.Open(filepath.Join(t.TempDir(), "spool.db"), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	m := ops.NewMetrics()
	registerMetrics(m, gw, xg)
	registerSpoolMetrics(m, store, gw, xg)

	doc := readMetricsTable(t)
	registered := map[string]bool{}
	for _, d := range m.Catalog() {
		registered[d.Name] = true
		row, ok := doc[d.Name]
		if !ok {
			t.Errorf("metric %s is registered but not in the table in internal/ops/doc.go", d.Name)
			continue
		}
		if kind := map[ops.Kind]string{ops.Counter: "counter", ops.Gauge: "gauge"}[d.Kind]; kind != row.kind {
			t.Errorf("metric %s is a %s, the table says %s", d.Name, kind, row.kind)
		}
		for l, values := range d.Labels {
			docValues, ok := row.labels[l]
			if !ok {
				t.Errorf("metric %s has label %s, not in the table", d.Name, l)
				continue
			}
			for _, v := range values {
				if !slices.ContainsFunc(docValues, func(dv string) bool { return documentedValue(dv, v) }) {
					t.Errorf("metric %s{%s=%q}: value not in the table (%v)", d.Name, l, v, docValues)
				}
			}
			for _, dv := range docValues {
				if !slices.ContainsFunc(values, func(v string) bool { return documentedValue(dv, v) }) {
					t.Errorf("metric %s{%s=%q} is in the table but not registered (%v)", d.Name, l, dv, values)
				}
			}
		}
		for l := range row.labels {
			if _, ok := d.Labels[l]; !ok {
				t.Errorf("metric %s: label %s is in the table but not registered", d.Name, l)
			}
		}
	}
	for name := range doc {
		if !registered[name] {
			t.Errorf("metric %s is in the table in internal/ops/doc.go but the daemon does not register it", name)
		}
	}
}
