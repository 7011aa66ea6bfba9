package broker

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/packets"
	"gopkg.in/yaml.v3"
)

// User is one account of the embedded broker, with the topic filters it
// may read and write.
type User struct {
	Password string   `yaml:"password"`
	Read     []string `yaml:"read"`  // nil: every topic
	Write    []string `yaml:"write"` // nil: only the JSON downlink
}

// Credentials are the embedded broker's accounts, by user name.
type Credentials map[string]User

// LoadCredentials reads a credentials file: YAML (or JSON, a subset of it)
// with a "users" map. Unknown keys, users without a password and invalid
// topic filters are refused, so a typo such as "pasword:" is an error at
// start and not an account that cannot log in.
func LoadCredentials(path string) (Credentials, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var file struct {
		Users Credentials `yaml:"users"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the file is empty")
		}
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return nil, errors.New(describeYAMLErrors(te.Errors))
		}
		return nil, fmt.Errorf("not a credentials file: %s", oneLine(err.Error()))
	}
	if len(file.Users) == 0 {
		return nil, errors.New(`no users defined (expected "users:" with at least one user and password)`)
	}
	for name, u := range file.Users {
		if name == "" {
			return nil, errors.New("a user has an empty name")
		}
		if u.Password == "" {
			return nil, fmt.Errorf("user %q has no password", name)
		}
		for _, f := range slices.Concat(u.Read, u.Write) {
			if !mqtt.IsValidFilter(f, false) {
				return nil, fmt.Errorf("user %q: %q is not a valid MQTT topic filter", name, f)
			}
		}
	}
	return file.Users, nil
}

var unknownField = regexp.MustCompile(`^(line \d+): field (\S+) not found in type (.+)$`)

// describeYAMLErrors turns the decoder's errors into one line in terms of
// the file: the usual mistake is a misspelt key.
func describeYAMLErrors(errs []string) string {
	out := make([]string, len(errs))
	for i, e := range errs {
		switch m := unknownField.FindStringSubmatch(e); {
		case m != nil && m[3] == "broker.User":
			e = fmt.Sprintf("%s: unknown key %q (a user has password, read and write)", m[1], m[2])
		case m != nil:
			e = fmt.Sprintf("%s: unknown key %q (the file has one key, users)", m[1], m[2])
		default:
			e = oneLine(e)
		}
		out[i] = e
	}
	return strings.Join(out, "; ")
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// TopicClass tells whether a topic (or a filter) belongs to a class the
// access rules treat apart; the broker needs no more of the topic layout.
type TopicClass func(topic string) bool

// accessHook authenticates the embedded broker's network clients, throttles
// password guessing per address, and applies each user's topic rules.
// The bridge's own inline client never passes through it.
type accessHook struct {
	mqtt.HookBase
	users      Credentials // nil: anonymous clients (loopback only)
	isDownlink TopicClass
	isOwn      TopicClass // the bridge's own topics
	log        *slog.Logger
	guard      *loginGuard
}

func (h *accessHook) ID() string { return "sovereign-access" }

func (h *accessHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (h *accessHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	addr := remoteHost(cl.Net.Remote)
	now := time.Now()
	if h.guard.locked(addr, now) {
		h.log.Debug("mqtt login refused: too many failures from this address", "remote", addr)
		return false
	}
	if h.users == nil {
		return h.willAllowed(cl, pk, addr)
	}
	name := string(pk.Connect.Username)
	u, ok := h.users[name]
	if ok && subtle.ConstantTimeCompare([]byte(u.Password), pk.Connect.Password) == 1 {
		// A good login does not forgive the address's earlier failures:
		// else one valid account, used between guesses, would keep
		// guessing at another unthrottled. Failures age out instead.
		return h.willAllowed(cl, pk, addr)
	}
	failures, lockedFor := h.guard.failed(addr, now)
	switch {
	case lockedFor > 0:
		h.log.Warn("repeated failed MQTT logins; refusing this address for a while", "remote", addr, "user", name, "failures", failures, "for", lockedFor)
	case failures == 1:
		h.log.Warn("mqtt login refused: unknown user or wrong password", "remote", addr, "user", name)
	default:
		h.log.Debug("mqtt login refused", "remote", addr, "user", name, "failures", failures)
	}
	return false
}

// willAllowed refuses a login whose will message the user may not publish:
// the broker sends a will without checking the access rules, so a client
// could otherwise forge (and retain) the bridge's own topics by dropping
// its connection.
func (h *accessHook) willAllowed(cl *mqtt.Client, pk packets.Packet, addr string) bool {
	if !pk.Connect.WillFlag {
		return true
	}
	// The CONNECT has been parsed: the client's user name is set.
	if h.OnACLCheck(cl, pk.Connect.WillTopic, true) {
		return true
	}
	h.log.Warn("mqtt login refused: the will message's topic may not be written by this client", "remote", addr, "user", string(pk.Connect.Username), "topic", pk.Connect.WillTopic)
	return false
}

func (h *accessHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	var u User
	if h.users != nil {
		u = h.users[string(cl.Properties.Username)]
	}
	if !write {
		// A subscription's filter is allowed; each message it would bring
		// is checked against the read rules on delivery.
		if strings.ContainsAny(topic, "+#") || u.Read == nil {
			return true
		}
		return matchesAny(u.Read, topic)
	}
	own := h.isOwn != nil && h.isOwn(topic)
	if u.Write == nil {
		return !own && h.isDownlink != nil && h.isDownlink(topic)
	}
	if own {
		// Only a rule that names the bridge's topics grants them, never a
		// catch-all such as "#". Another bridge daemon needs such a rule.
		return slices.ContainsFunc(u.Write, func(f string) bool {
			return h.isOwn(f) && matchesAny([]string{f}, topic)
		})
	}
	return matchesAny(u.Write, topic)
}

func matchesAny(filters []string, topic string) bool {
	for _, f := range filters {
		if _, ok := auth.MatchTopic(f, topic); ok {
			return true
		}
	}
	return false
}

func remoteHost(remote string) string {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return remote
}

// loginGuard counts failed logins per address. After a few failures an
// address is refused outright, for a time that doubles with each further
// failure up to a cap, so guessing a password costs hours instead of
// seconds while a user who mistyped once is not locked out.
type loginGuard struct {
	mu    sync.Mutex
	addrs map[string]*loginFailures
}

type loginFailures struct {
	count       int
	last        time.Time
	lockedUntil time.Time
}

const (
	freeFailures   = 5                // failures before an address is refused
	lockoutMin     = time.Second      // first refusal
	lockoutMax     = 10 * time.Minute // longest refusal
	failuresForget = 30 * time.Minute // quiet time after which failures are forgotten
	guardedAddrs   = 4096             // addresses remembered at most
)

func newLoginGuard() *loginGuard { return &loginGuard{addrs: map[string]*loginFailures{}} }

func (g *loginGuard) locked(addr string, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	f := g.addrs[addr]
	return f != nil && now.Before(f.lockedUntil)
}

// failed records a failure and returns the failures so far and, when this
// one starts or extends a refusal, how long it lasts.
func (g *loginGuard) failed(addr string, now time.Time) (int, time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f := g.addrs[addr]
	if f != nil && now.Sub(f.last) > failuresForget {
		f = nil
	}
	if f == nil {
		if len(g.addrs) >= guardedAddrs {
			g.forgetOldest()
		}
		f = &loginFailures{}
		g.addrs[addr] = f
	}
	f.count++
	f.last = now
	if f.count < freeFailures {
		return f.count, 0
	}
	d := lockoutMax
	if shift := f.count - freeFailures; shift < 20 {
		d = min(lockoutMin<<shift, lockoutMax)
	}
	f.lockedUntil = now.Add(d)
	// Report the refusal once when it starts and then at each doubling, not
	// at every attempt.
	if f.count == freeFailures || d < lockoutMax {
		return f.count, d
	}
	return f.count, 0
}

func (g *loginGuard) forgetOldest() {
	var oldest string
	var at time.Time
	for a, f := range g.addrs {
		if oldest == "" || f.last.Before(at) {
			oldest, at = a, f.last
		}
	}
	delete(g.addrs, oldest)
}
