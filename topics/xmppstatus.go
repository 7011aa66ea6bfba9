package topics

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// The XMPP side's own state on the broker, for Home Assistant (package
// hass) and any other local tool: whether it is connected to its XMPP
// server, and how many of its rooms it is in. Written only by the bridge.
const (
	xmppStatusPrefix = bridgeRoot + "/bridge/xmpp/"

	// XMPPStatusFilter matches every XMPP side's status record.
	XMPPStatusFilter = xmppStatusPrefix + "+"
)

// XMPPStatus is the retained topic of the status record (XMPPStatusRecord)
// of the XMPP side logged in as jid, a bare JID that ValidXMPPJID accepts.
// An empty retained message there means that XMPP side is gone.
func XMPPStatus(jid string) string { return xmppStatusPrefix + jid }

// XMPPStatusJID returns the bare JID of an XMPPStatus topic.
func XMPPStatusJID(topic string) (string, bool) {
	jid, ok := lastSegment(topic, xmppStatusPrefix)
	return jid, ok && ValidXMPPJID(jid) == nil
}

// ValidXMPPJID checks that jid, the XMPP side's bare account JID, can name
// its status topic: one topic level, without MQTT's wildcards. A bare JID
// has no "/"; "+" and "#" are allowed in a JID's local part, and an
// account that has them has no status record.
func ValidXMPPJID(jid string) error {
	switch {
	case jid == "":
		return fmt.Errorf("%w XMPP status: no JID", ErrMalformed)
	case strings.Contains(jid, "/"):
		return fmt.Errorf("%w XMPP status: JID %q is not bare", ErrMalformed, jid)
	case strings.ContainsAny(jid, "+#\x00"):
		return fmt.Errorf("%w XMPP status: JID %q has a character (+ # NUL) that cannot be in a topic level", ErrMalformed, jid)
	}
	return nil
}

// XMPPStatusRecord is the XMPP side's state: retained JSON on
// XMPPStatus(JID), published when its session connects, when the number
// of rooms it is in changes, and when it disconnects or stops:
//
//	{"state":"online","jid":"bridge@example.org","since":"2026-11-25T20:38:31Z","rooms":1}
type XMPPStatusRecord struct {
	// State is LinkOnline while the XMPP session is up, else LinkOffline
	// (not connected: the server away, the login refused, or the XMPP
	// side stopped). The other link states are not used.
	State LinkState `json:"state"`
	// JID is the XMPP side's bare account JID.
	JID string `json:"jid"`
	// Since is when State began, RFC 3339 in UTC.
	Since string `json:"since"`
	// Rooms is how many of its rooms the XMPP side is in; 0 while offline.
	Rooms int `json:"rooms"`
}

func (r XMPPStatusRecord) check() error {
	if r.State != LinkOnline && r.State != LinkOffline {
		return fmt.Errorf("%w XMPP status: state %q, want %q or %q", ErrMalformed, r.State, LinkOnline, LinkOffline)
	}
	if err := ValidXMPPJID(r.JID); err != nil {
		return err
	}
	if _, err := time.Parse(time.RFC3339, r.Since); err != nil {
		return fmt.Errorf("%w XMPP status: since %q: %w", ErrMalformed, r.Since, err)
	}
	if r.Rooms < 0 {
		return fmt.Errorf("%w XMPP status: %d rooms", ErrMalformed, r.Rooms)
	}
	return nil
}

// Marshal encodes the record for XMPPStatus(r.JID), or says why it does
// not follow the contract.
func (r XMPPStatusRecord) Marshal() ([]byte, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	return json.Marshal(r)
}

// ParseXMPPStatus decodes a record from XMPPStatus. Fields it does not
// know are ignored, so a reader keeps working when fields are added.
func ParseXMPPStatus(b []byte) (XMPPStatusRecord, error) {
	var r XMPPStatusRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return XMPPStatusRecord{}, fmt.Errorf("%w XMPP status: %w", ErrMalformed, err)
	}
	if err := r.check(); err != nil {
		return XMPPStatusRecord{}, err
	}
	return r, nil
}
