package ops

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// start runs s until the test ends and returns a function that stops it
// and waits for Run to return.
func start(t *testing.T, s *Server) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(deadline):
				t.Fatal("Run did not return after its context ended")
			}
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

func TestServer(t *testing.T) {
	var framesIn atomic.Uint64
	framesIn.Store(42)
	m := NewMetrics()
	m.Counter("radio_frames_in_total", "Frames read from the radio link.", nil, framesIn.Load)
	for reason, n := range map[string]uint64{"oversize": 3, "rejected": 5} {
		m.Counter("radio_frames_dropped_total", "Frames or packets discarded, by reason.", Labels{"reason": reason}, func() uint64 { return n })
	}
	m.Gauge("spool_depth", "Messages waiting to be sent.", Labels{"side": "radio"}, func() float64 { return 7 })
	m.Family("naks_total", "Negative acknowledgements from the mesh, by reason.", Counter, "reason",
		func() map[string]float64 { return map[string]float64{"no_route": 2, "timeout": 1} })

	var mu sync.Mutex
	health := Health{Radio: Up, XMPP: Up, MQTT: Up, Airtime: AirtimeOK}
	s, err := NewServer(ServerConfig{
		Listen:  "127.0.0.1:0",
		Metrics: m,
		Health: func() Health {
			mu.Lock()
			defer mu.Unlock()
			return health
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, s)
	base := "http://" + s.Addr().String()

	code, body := get(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		"# HELP sovereign_bridge_radio_frames_in_total Frames read from the radio link.\n",
		"# TYPE sovereign_bridge_radio_frames_in_total counter\n",
		"\nsovereign_bridge_radio_frames_in_total 42\n",
		"\nsovereign_bridge_radio_frames_dropped_total{reason=\"oversize\"} 3\n",
		"\nsovereign_bridge_radio_frames_dropped_total{reason=\"rejected\"} 5\n",
		"# TYPE sovereign_bridge_spool_depth gauge\n",
		"\nsovereign_bridge_spool_depth{side=\"radio\"} 7\n",
		"# TYPE sovereign_bridge_naks_total counter\n",
		"\nsovereign_bridge_naks_total{reason=\"no_route\"} 2\n",
		"\nsovereign_bridge_naks_total{reason=\"timeout\"} 1\n",
		"\ngo_goroutines ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	framesIn.Add(1)
	if _, body := get(t, base+"/metrics"); !strings.Contains(body, "\nsovereign_bridge_radio_frames_in_total 43\n") {
		t.Error("/metrics does not read the counter at scrape time")
	}

	for _, tc := range []struct {
		h    Health
		code int
	}{
		{Health{Up, Up, Up, AirtimeOK}, http.StatusOK},
		{Health{Up, Off, Up, AirtimeOK}, http.StatusOK},
		{Health{Down, Up, Up, AirtimeOK}, http.StatusServiceUnavailable},
		{Health{Up, Down, Up, AirtimeOK}, http.StatusServiceUnavailable},
		{Health{Down, Off, Up, AirtimeOK}, http.StatusServiceUnavailable},
		{Health{"", Off, Up, AirtimeOK}, http.StatusServiceUnavailable},
		// Up, but packets for the mesh wait for airtime: degraded.
		{Health{Up, Up, Up, AirtimeBlocked}, http.StatusServiceUnavailable},
		{Health{Up, Off, Up, ""}, http.StatusServiceUnavailable},
	} {
		mu.Lock()
		health = tc.h
		mu.Unlock()
		code, body := get(t, base+"/healthz")
		if code != tc.code {
			t.Errorf("%+v: status %d, want %d", tc.h, code, tc.code)
		}
		var got Health
		if err := json.Unmarshal([]byte(body), &got); err != nil || got != tc.h {
			t.Errorf("%+v: body %q (%v)", tc.h, body, err)
		}
	}
	mu.Lock()
	health = Health{Radio: Up, XMPP: Off, MQTT: Up, Airtime: AirtimeBlocked}
	mu.Unlock()
	if _, body := get(t, base+"/healthz"); body != `{"radio":"up","xmpp":"off","mqtt":"up","airtime":"blocked"}`+"\n" {
		t.Errorf("/healthz body %q", body)
	}

	if code, _ := get(t, base+"/"); code != http.StatusNotFound {
		t.Errorf("/: %d", code)
	}

	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("still serving after shutdown")
	}
}

// A request that never finishes delays shutdown only by the timeout.
func TestServerShutdownBounded(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	s, err := NewServer(ServerConfig{
		Listen:          "127.0.0.1:0",
		ShutdownTimeout: 50 * time.Millisecond,
		Health: func() Health {
			close(entered)
			<-release
			return Health{Up, Up, Up, AirtimeOK}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, s)
	go func() {
		resp, err := http.Get("http://" + s.Addr().String() + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
	}()
	select {
	case <-entered:
	case <-time.After(deadline):
		t.Fatal("request did not arrive")
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestServerListen(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:9464", "[2001:db8::1]:9464"} {
		if s, err := NewServer(ServerConfig{Listen: addr}); !errors.Is(err, ErrNotLoopback) {
			s.Close()
			t.Errorf("%s: got %v, want ErrNotLoopback", addr, err)
		}
	}
	if _, err := NewServer(ServerConfig{Listen: "127.0.0.1"}); err == nil || errors.Is(err, ErrNotLoopback) {
		t.Errorf("no port: got %v", err)
	}

	s, err := NewServer(ServerConfig{Listen: "0.0.0.0:0", AllowRemote: true})
	if err != nil {
		t.Fatalf("allowed remote: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}

	for _, addr := range []string{"", "off"} {
		s, err := NewServer(ServerConfig{Listen: addr})
		if s != nil || err != nil {
			t.Fatalf("%q: got %v, %v; want a nil server", addr, s, err)
		}
		if s.Addr() != nil {
			t.Error("a disabled server has an address")
		}
		if err := s.Run(t.Context()); err != nil {
			t.Error(err)
		}
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	}
}

func TestMetricsRegister(t *testing.T) {
	m := NewMetrics()
	one := func() float64 { return 1 }
	if err := m.Register("links", "Links.", Gauge, Labels{"side": "radio"}, one); err != nil {
		t.Fatal(err)
	}
	if err := m.Register("links", "Links.", Gauge, Labels{"side": "xmpp"}, one); err != nil {
		t.Errorf("second label value: %v", err)
	}
	if err := m.Register("links", "Links.", Gauge, Labels{"side": "radio"}, one); err == nil {
		t.Error("duplicate series accepted")
	}
	if err := m.Register("links", "Other help.", Gauge, Labels{"side": "mqtt"}, one); err == nil {
		t.Error("inconsistent help accepted")
	}
	if err := m.Register("bad-name", "Bad.", Counter, nil, one); err == nil {
		t.Error("invalid name accepted")
	}
	if err := m.Register("good_name", "Good.", Counter, Labels{"bad label": "x"}, one); err == nil {
		t.Error("invalid label name accepted")
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Counter did not panic on a duplicate")
			}
		}()
		m.Counter("links", "Links.", Labels{"side": "radio"}, func() uint64 { return 0 })
	}()

	// The registry is private: another Metrics takes the same names.
	if err := NewMetrics().Register("links", "Links.", Gauge, Labels{"side": "radio"}, one); err != nil {
		t.Errorf("registries are shared: %v", err)
	}
}
