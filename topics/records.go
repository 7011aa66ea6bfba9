package topics

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/jshiffer/lora-xmpp-bridge/meshpb"
)

// MaxTextBytes is the longest text, in UTF-8 bytes, that one mesh packet
// may carry, whether asked for on MeshTX or on the JSON downlink. The
// firmware allows 233 bytes of payload; 200 is its own text-entry limit and
// leaves room for signatures and PKI overhead on newer firmware. A longer
// text is refused (TOO_LARGE): splitting it is the sender's job.
const MaxTextBytes = 200

// Origins: the gateway_id of a send request on MeshTX, echoed in its
// result on MeshResult, names who asked.
const (
	// OriginXMPP is the XMPP gateway's room messages.
	OriginXMPP = "xmpp"
	// OriginJSONDownlink is the firmware's JSON downlink, on which local
	// tools send; its request ids are the radio link's own.
	OriginJSONDownlink = "mqtt-json"
)

// NodeRecord is what the bridge knows of a mesh node: retained JSON on
// Node(ID). The radio link also keeps these in its state directory, so
// names are known before the radio has finished its handshake.
type NodeRecord struct {
	ID        string `json:"id"` // "!xxxxxxxx"
	Num       uint32 `json:"num"`
	LongName  string `json:"long_name,omitempty"`
	ShortName string `json:"short_name,omitempty"`
	HWModel   string `json:"hw_model,omitempty"`
	Role      string `json:"role,omitempty"`
	LastHeard uint32 `json:"last_heard,omitempty"` // unix seconds
	// ViaMQTT says the radio last heard the node through MQTT, not on
	// the air: not a node of the local mesh.
	ViaMQTT bool `json:"via_mqtt,omitempty"`
}

// RadioRecord is a radio side's radio as of its last handshake: retained
// JSON on Radio(ID).
type RadioRecord struct {
	ID          string          `json:"id"` // the radio's node id, the gateway id on every topic
	Num         uint32          `json:"num"`
	LongName    string          `json:"long_name,omitempty"`
	ShortName   string          `json:"short_name,omitempty"`
	Firmware    string          `json:"firmware_version,omitempty"`
	HWModel     string          `json:"hw_model,omitempty"`
	Region      string          `json:"region,omitempty"`
	Preset      string          `json:"modem_preset,omitempty"`
	HopLimit    uint32          `json:"hop_limit"`
	RebootCount uint32          `json:"reboot_count"`
	Root        string          `json:"mqtt_root"`
	Proxy       bool            `json:"mqtt_client_proxy"`
	Channels    []ChannelRecord `json:"channels"` // the enabled ones
	// Mesh is the mesh the operator says the radio is on (--mesh): radios
	// with the same name are on one mesh, and a room message goes out on
	// one of them. Empty when not given.
	Mesh string `json:"mesh,omitempty"`
}

// ChannelRecord is one enabled channel of the radio, in RadioRecord.
type ChannelRecord struct {
	Index    uint32 `json:"index"`
	Name     string `json:"name"` // an unnamed primary takes the preset's name
	Role     string `json:"role"`
	Uplink   bool   `json:"uplink_enabled"`
	Downlink bool   `json:"downlink_enabled"`
}

// LinkState is the radio link's state in StatusRecord.
type LinkState string

const (
	// LinkConnecting: the bridge started and has not reached the radio yet.
	LinkConnecting LinkState = "connecting"
	// LinkOnline: the radio completed its handshake; packets flow.
	LinkOnline LinkState = "online"
	// LinkDisconnected: the radio is away (StatusRecord.Error says why);
	// the bridge keeps trying, and what waits for the mesh stays queued.
	LinkDisconnected LinkState = "disconnected"
	// LinkOffline: the bridge stopped.
	LinkOffline LinkState = "offline"
)

// StatusRecord is a radio link's state: retained JSON on Status(Node).
type StatusRecord struct {
	State  LinkState `json:"state"`
	Device string    `json:"device"`
	Since  string    `json:"since"` // RFC 3339, UTC: when State began
	Error  string    `json:"error,omitempty"`
	Node   string    `json:"node,omitempty"` // the radio's node id, once known
	// AirtimeBlocked says that packets for the mesh wait because the
	// bridge's airtime share is spent for now, since AirtimeBlockedSince
	// (RFC 3339, UTC). Both are left out otherwise, so the record reads
	// as it did before they existed.
	AirtimeBlocked      bool   `json:"airtime_blocked,omitempty"`
	AirtimeBlockedSince string `json:"airtime_blocked_since,omitempty"`
	// QueueDepth is how many packets wait for the radio. AirtimeUsed is
	// the airtime, in seconds, the bridge's packets used in the current
	// duty-cycle window, of AirtimeBudget, what they may use in it (0
	// until the radio's region is known). Republished at most every 30
	// seconds while they change; left out when 0, as they are from radio
	// sides that predate them.
	QueueDepth    int     `json:"queue_depth,omitempty"`
	AirtimeUsed   float64 `json:"airtime_used_seconds,omitempty"`
	AirtimeBudget float64 `json:"airtime_budget_seconds,omitempty"`
}

// SendRequest is a packet to send on the mesh, as carried on MeshTX: a
// decoded ServiceEnvelope whose gateway_id is Origin and whose packet id
// is ID. With a spool (as the daemon runs) a request published again with
// the same origin, id and content is recognised and sent once.
type SendRequest struct {
	Origin string // gateway_id
	ID     uint32 // packet.id: the origin's request id, echoed in the Result
	To     uint32 // packet.to; 0 means broadcast
	// Channel names the channel (channel_id, matched case-insensitively;
	// an unnamed primary goes by its preset's name). When empty,
	// ChannelIndex (packet.channel) picks it.
	Channel      string
	ChannelIndex uint32
	Data         *meshpb.Data // packet.decoded
}

// ErrMalformed is returned for a payload that does not follow the contract.
var ErrMalformed = errors.New("malformed")

// Marshal encodes the request for MeshTX.
func (r SendRequest) Marshal() ([]byte, error) {
	return proto.Marshal(&meshpb.ServiceEnvelope{
		GatewayId: r.Origin, ChannelId: r.Channel,
		Packet: &meshpb.MeshPacket{
			Id: r.ID, To: r.To, Channel: r.ChannelIndex,
			PayloadVariant: &meshpb.MeshPacket_Decoded{Decoded: r.Data},
		},
	})
}

// ParseSendRequest decodes a request from MeshTX.
func ParseSendRequest(payload []byte) (SendRequest, error) {
	var env meshpb.ServiceEnvelope
	if err := proto.Unmarshal(payload, &env); err != nil {
		return SendRequest{}, fmt.Errorf("%w send request: %w", ErrMalformed, err)
	}
	p := env.GetPacket()
	if p.GetDecoded() == nil {
		return SendRequest{}, fmt.Errorf("%w send request: no decoded packet", ErrMalformed)
	}
	return SendRequest{Origin: env.GetGatewayId(), ID: p.GetId(), To: p.GetTo(), Channel: env.GetChannelId(),
		ChannelIndex: p.GetChannel(), Data: p.GetDecoded()}, nil
}

// Result is the outcome of a send request, as carried on MeshResult: a
// decoded ROUTING_APP packet whose request_id is the request's ID and
// whose Routing error_reason is Reason (NONE: the radio took the packet,
// or the mesh acknowledged it), with the request's origin as gateway_id.
// One request may get more than one result: the radio's, then the mesh's
// acknowledgement or refusal.
type Result struct {
	Origin    string // gateway_id, copied from the request
	RequestID uint32 // decoded.request_id
	Reason    meshpb.Routing_Error
	Radio     uint32 // packet.from and packet.to: the radio's node number, 0 before its first handshake
	Channel   uint32 // packet.channel: the channel index the request resolved to
	// PacketID is packet.id: the id the packet went on the mesh with (its
	// id on the Meshtastic topics, and what the mesh's replies and
	// tapbacks to it name in reply_id), once the radio side chose one; 0
	// otherwise, and from radio sides older than the field.
	PacketID uint32
}

// Marshal encodes the result for MeshResult.
func (r Result) Marshal() ([]byte, error) {
	routing, err := proto.Marshal(&meshpb.Routing{Variant: &meshpb.Routing_ErrorReason{ErrorReason: r.Reason}})
	if err != nil {
		return nil, err
	}
	return proto.Marshal(&meshpb.ServiceEnvelope{
		GatewayId: r.Origin,
		Packet: &meshpb.MeshPacket{
			From: r.Radio, To: r.Radio, Channel: r.Channel, Id: r.PacketID,
			PayloadVariant: &meshpb.MeshPacket_Decoded{Decoded: &meshpb.Data{
				Portnum: meshpb.PortNum_ROUTING_APP, Payload: routing, RequestId: r.RequestID,
			}},
		},
	})
}

// ParseResult decodes a result from MeshResult.
func ParseResult(payload []byte) (Result, error) {
	var env meshpb.ServiceEnvelope
	if err := proto.Unmarshal(payload, &env); err != nil {
		return Result{}, fmt.Errorf("%w result: %w", ErrMalformed, err)
	}
	d := env.GetPacket().GetDecoded()
	if d.GetPortnum() != meshpb.PortNum_ROUTING_APP {
		return Result{}, fmt.Errorf("%w result: not a routing packet", ErrMalformed)
	}
	var rt meshpb.Routing
	if err := proto.Unmarshal(d.GetPayload(), &rt); err != nil {
		return Result{}, fmt.Errorf("%w result: %w", ErrMalformed, err)
	}
	return Result{Origin: env.GetGatewayId(), RequestID: d.GetRequestId(), Reason: rt.GetErrorReason(),
		Radio: env.GetPacket().GetFrom(), Channel: env.GetPacket().GetChannel(), PacketID: env.GetPacket().GetId()}, nil
}
