package topics

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// JSONResult carries the outcome of each JSON downlink as JSON
// (DownlinkResult), for the local tool that sent it: not retained. It
// lies outside the downlink's own filter (<root>/2/json/mqtt/#), so the
// bridge never takes a result for a request, and under the bridge's own
// root, so no network client can forge one.
const JSONResult = bridgeRoot + "/json/result"

// DownlinkStatus says how far a JSON downlink got.
type DownlinkStatus string

// A JSON downlink gets exactly one terminal result (refused, sent, acked
// or failed), and at most one queued before it. A direct message is sent
// asking its destination for an acknowledgement, so it ends acked or
// failed, never sent; anything else ends sent, or failed when the radio
// refuses it.
const (
	// DownlinkQueued: checked and accepted into the transmit queue.
	DownlinkQueued DownlinkStatus = "queued"
	// DownlinkSent: the radio took the packet (terminal, except for a
	// direct message, which waits for its acknowledgement instead).
	DownlinkSent DownlinkStatus = "sent"
	// DownlinkAcked: the destination of a direct message acknowledged it.
	DownlinkAcked DownlinkStatus = "acked"
	// DownlinkRefused: never queued, with the reason (a parse error too).
	DownlinkRefused DownlinkStatus = "refused"
	// DownlinkFailed: queued, but the radio or the mesh refused it, or
	// no acknowledgement came; with the reason.
	DownlinkFailed DownlinkStatus = "failed"
)

// Terminal reports whether s is a request's last result.
func (s DownlinkStatus) Terminal() bool { return s != DownlinkQueued }

func (s DownlinkStatus) valid() bool {
	switch s {
	case DownlinkQueued, DownlinkSent, DownlinkAcked, DownlinkRefused, DownlinkFailed:
		return true
	}
	return false
}

// MaxDownlinkIDBytes bounds the client's own "id" in a JSON downlink, as
// it is written (a JSON string with its quotes, or a number): it comes
// back in every result, so it must stay small.
const MaxDownlinkIDBytes = 64

// DownlinkResult is the outcome of one JSON downlink, as JSON on
// JSONResult:
//
//	{"id":"nr-42","request_id":1234567890,"status":"refused","reason":"BAD_REQUEST","detail":"json downlink: unknown \"type\" ...","gateway":"!5eed0001"}
type DownlinkResult struct {
	// ID is the request's own "id", verbatim (a JSON string or number),
	// left out when it had none.
	ID json.RawMessage `json:"id,omitempty"`
	// RequestID is the bridge's id for the request, the request_id of its
	// Result on MeshResult too.
	RequestID uint32         `json:"request_id"`
	Status    DownlinkStatus `json:"status"`
	// Reason names why a request was refused or failed, in the terms of
	// the firmware's Routing errors (BAD_REQUEST, TOO_LARGE,
	// RATE_LIMIT_EXCEEDED, MAX_RETRANSMIT, TIMEOUT, ...); Detail says it
	// in a sentence.
	Reason string `json:"reason,omitempty"`
	Detail string `json:"detail,omitempty"`
	// Gateway is the node id of the radio that took the request, once
	// the bridge knows it.
	Gateway string `json:"gateway,omitempty"`
	// PacketID is the packet's id on the mesh, once it went to the radio:
	// the request_id of the mesh's acknowledgement, and the id the packet
	// goes by on the Meshtastic topics.
	PacketID uint32 `json:"packet_id,omitempty"`
}

// Marshal encodes the result for JSONResult, without HTML escaping: the
// detail is for people reading it in a terminal.
func (r DownlinkResult) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(r); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// ParseDownlinkResult decodes a result from JSONResult. Fields it does
// not know are ignored, so a tool keeps working when fields are added.
func ParseDownlinkResult(b []byte) (DownlinkResult, error) {
	var r DownlinkResult
	if err := json.Unmarshal(b, &r); err != nil {
		return DownlinkResult{}, fmt.Errorf("%w downlink result: %w", ErrMalformed, err)
	}
	if !r.Status.valid() {
		return DownlinkResult{}, fmt.Errorf("%w downlink result: unknown status %q", ErrMalformed, r.Status)
	}
	if r.RequestID == 0 {
		return DownlinkResult{}, fmt.Errorf("%w downlink result: no request_id", ErrMalformed)
	}
	if (r.Status == DownlinkRefused || r.Status == DownlinkFailed) != (r.Reason != "") {
		return DownlinkResult{}, fmt.Errorf("%w downlink result: status %q with reason %q", ErrMalformed, r.Status, r.Reason)
	}
	if r.ID != nil {
		if err := checkDownlinkID(r.ID); err != nil {
			return DownlinkResult{}, fmt.Errorf("%w downlink result: %w", ErrMalformed, err)
		}
	}
	return r, nil
}

// ErrDownlinkID is returned by DownlinkID for an "id" that cannot be
// echoed back.
var ErrDownlinkID = errors.New(`json downlink: "id"`)

// DownlinkID returns the client's own "id" of a JSON downlink verbatim,
// nil when the message has none. The message is read only as far as it
// is a JSON object, so one that is malformed after its "id" (cut short,
// say) still has it, and its refusal carries it; whether the message is
// valid is the downlink parser's to say. An "id" that is not a string or
// a number, or longer than MaxDownlinkIDBytes, is an error: the request
// is refused rather than answered with results its sender cannot match.
func DownlinkID(payload []byte) (json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, nil
	}
	var id json.RawMessage
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			break
		}
		var raw json.RawMessage
		if dec.Decode(&raw) != nil {
			break
		}
		if key == "id" {
			id = raw // the last one, as the parser takes it
		}
	}
	if id == nil {
		return nil, nil
	}
	if err := checkDownlinkID(id); err != nil {
		return nil, err
	}
	return id, nil
}

func checkDownlinkID(raw json.RawMessage) error {
	if len(raw) > MaxDownlinkIDBytes {
		return fmt.Errorf("%w is %d bytes long; at most %d (a JSON string or number)", ErrDownlinkID, len(raw), MaxDownlinkIDBytes)
	}
	if !utf8.Valid(raw) {
		return fmt.Errorf("%w is not valid UTF-8", ErrDownlinkID)
	}
	if len(raw) == 0 || !json.Valid(raw) {
		return fmt.Errorf("%w is not a JSON value", ErrDownlinkID)
	}
	// The first byte of a valid JSON value tells its kind.
	if c := raw[0]; c == '"' || c == '-' || (c >= '0' && c <= '9') {
		return nil
	}
	return fmt.Errorf("%w is %s; expected a JSON string or number", ErrDownlinkID, kind(raw[0]))
}

// kind names the JSON type a value starting with c has, with its article.
func kind(c byte) string {
	switch c {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	}
	return "null"
}
