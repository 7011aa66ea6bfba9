package topics

import (
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
)

// Amending a send request that still waits in a radio side's queue: a
// room message corrected or retracted before the radio took it. The
// requester cannot know whether a request still waits (the radio side
// holds the queue and paces it), so it asks, and the radio side answers
// once. Both are JSON, so that a local tool reading the bridge's topics
// sees what was asked and what became of it.
const (
	amendPrefix = bridgeRoot + "/mesh/amend/"
	// MeshAmendResult carries the outcome of each Amend: AmendResult,
	// JSON, not retained.
	MeshAmendResult = bridgeRoot + "/mesh/amend-result"
)

// MeshAmendTo is the topic of the radio side whose gateway id is gateway
// for Amend requests: the radio a request was sent to is the one that
// holds it. Amends come in on the same intake as send requests, so an
// amend published after its request is taken in after it.
func MeshAmendTo(gateway string) string { return amendPrefix + gateway }

// AmendAction says what to do with the request.
type AmendAction string

const (
	// AmendCancel removes the request from the queue; it is never sent,
	// and gets no other result.
	AmendCancel AmendAction = "cancel"
	// AmendReplace gives the request new content (Amend.Data), keeping
	// its place in the queue; its results come as before, under its id.
	AmendReplace AmendAction = "replace"
)

// Amend asks a radio side to change a send request that still waits:
//
//	{"origin":"xmpp","id":1234,"target":5678,"action":"replace","data":"CAESBWhlbGxv"}
type Amend struct {
	// Origin is the requester (SendRequest.Origin): only the origin of a
	// request may amend it.
	Origin string `json:"origin"`
	// ID is the amend's own id, from the origin's id space, echoed in its
	// AmendResult.
	ID uint32 `json:"id"`
	// Target is the send request's ID.
	Target uint32      `json:"target"`
	Action AmendAction `json:"action"`
	// Data is the request's new packet content, for AmendReplace only:
	// the protobuf Data, base64 in the JSON.
	Data *meshpb.Data `json:"-"`
}

// amendWire is Amend as it is written.
type amendWire struct {
	Origin string      `json:"origin"`
	ID     uint32      `json:"id"`
	Target uint32      `json:"target"`
	Action AmendAction `json:"action"`
	Data   []byte      `json:"data,omitempty"`
}

// Marshal encodes the amend for MeshAmendTo.
func (a Amend) Marshal() ([]byte, error) {
	w := amendWire{Origin: a.Origin, ID: a.ID, Target: a.Target, Action: a.Action}
	if a.Data != nil {
		b, err := proto.Marshal(a.Data)
		if err != nil {
			return nil, err
		}
		w.Data = b
	}
	if err := w.check(); err != nil {
		return nil, err
	}
	return json.Marshal(w)
}

func (w amendWire) check() error {
	switch {
	case w.Origin == "":
		return fmt.Errorf("%w amend: no origin", ErrMalformed)
	case w.ID == 0 || w.Target == 0:
		return fmt.Errorf("%w amend: id %d, target %d: both must be set", ErrMalformed, w.ID, w.Target)
	case w.Action == AmendCancel && len(w.Data) > 0:
		return fmt.Errorf("%w amend: a cancel carries no data", ErrMalformed)
	case w.Action == AmendReplace && len(w.Data) == 0:
		return fmt.Errorf("%w amend: a replace without data", ErrMalformed)
	case w.Action != AmendCancel && w.Action != AmendReplace:
		return fmt.Errorf("%w amend: unknown action %q", ErrMalformed, w.Action)
	}
	return nil
}

// ParseAmend decodes an amend from MeshAmendTo. Fields it does not know
// are ignored.
func ParseAmend(b []byte) (Amend, error) {
	var w amendWire
	if err := json.Unmarshal(b, &w); err != nil {
		return Amend{}, fmt.Errorf("%w amend: %w", ErrMalformed, err)
	}
	if err := w.check(); err != nil {
		return Amend{}, err
	}
	a := Amend{Origin: w.Origin, ID: w.ID, Target: w.Target, Action: w.Action}
	if len(w.Data) > 0 {
		a.Data = new(meshpb.Data)
		if err := proto.Unmarshal(w.Data, a.Data); err != nil {
			return Amend{}, fmt.Errorf("%w amend data: %w", ErrMalformed, err)
		}
	}
	return a, nil
}

// AmendOutcome says what an amend did.
type AmendOutcome string

const (
	// AmendApplied: the request still waited, and was cancelled or
	// replaced.
	AmendApplied AmendOutcome = "applied"
	// AmendNotWaiting: no such request waits here: the radio has it
	// already (sent, or being sent), or it finished, or it never arrived.
	// Nothing was changed.
	AmendNotWaiting AmendOutcome = "not_waiting"
	// AmendRefused: the replacement cannot be sent (Reason says why, in
	// the terms of Result.Reason); the request is unchanged.
	AmendRefused AmendOutcome = "refused"
)

func (o AmendOutcome) valid() bool {
	return o == AmendApplied || o == AmendNotWaiting || o == AmendRefused
}

// AmendResult is the outcome of one Amend, JSON on MeshAmendResult:
//
//	{"origin":"xmpp","id":1234,"target":5678,"outcome":"not_waiting","gateway":"!5eed0001","packet_id":3735928559}
type AmendResult struct {
	Origin  string       `json:"origin"`
	ID      uint32       `json:"id"`
	Target  uint32       `json:"target"`
	Outcome AmendOutcome `json:"outcome"`
	// Reason names why a replacement was refused (a Routing error name,
	// TOO_LARGE say), with Refused only.
	Reason string `json:"reason,omitempty"`
	// Gateway is the node id of the radio side that answered.
	Gateway string `json:"gateway,omitempty"`
	// PacketID is the id the request goes (or went) on the mesh with,
	// when the radio side knows it.
	PacketID uint32 `json:"packet_id,omitempty"`
}

// Marshal encodes the result for MeshAmendResult.
func (r AmendResult) Marshal() ([]byte, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	return json.Marshal(r)
}

func (r AmendResult) check() error {
	switch {
	case r.ID == 0:
		return fmt.Errorf("%w amend result: no id", ErrMalformed)
	case !r.Outcome.valid():
		return fmt.Errorf("%w amend result: unknown outcome %q", ErrMalformed, r.Outcome)
	case (r.Outcome == AmendRefused) != (r.Reason != ""):
		return fmt.Errorf("%w amend result: outcome %q with reason %q", ErrMalformed, r.Outcome, r.Reason)
	}
	return nil
}

// ParseAmendResult decodes a result from MeshAmendResult. Fields it does
// not know are ignored.
func ParseAmendResult(b []byte) (AmendResult, error) {
	var r AmendResult
	if err := json.Unmarshal(b, &r); err != nil {
		return AmendResult{}, fmt.Errorf("%w amend result: %w", ErrMalformed, err)
	}
	if err := r.check(); err != nil {
		return AmendResult{}, err
	}
	return r, nil
}
