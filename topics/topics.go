// Package topics is the contract between the two gateways that meet on the
// MQTT broker, and with the local tools that read it: every topic the
// bridge uses and every payload that crosses the broker is defined here,
// once, and both gateways use these definitions rather than their own.
//
// Two families live on the broker:
//
//   - Meshtastic-compatible topics under a root such as "msh/EU_868", laid out
//     exactly as the firmware's MQTT module lays them out, so existing
//     Meshtastic MQTT consumers understand them; they are for local tools,
//     which may write only the JSON downlink:
//     <root>/2/e/<channel>/<gateway>     ServiceEnvelope (protobuf)
//     <root>/2/json/<channel>/<gateway>  firmware 2.7 JSON
//     <root>/2/json/mqtt/                JSON downlink (sendtext, sendposition),
//     answered on JSONResult
//     <root>/2/map/                      map reports
//   - The bridge's own topics under "sovereign/", through which the
//     gateways of this daemon meet. Only the bridge writes them; local
//     tools may read them. Their payloads are the types of this package:
//     SendRequest and Result (protobuf), NodeRecord, RadioRecord,
//     StatusRecord, XMPPStatusRecord, DownlinkResult, Amend and
//     AmendResult (JSON), and MaxTextBytes bounds a text. Records of a radio end in its gateway
//     id, and the XMPP side's in its account's bare JID, so several
//     bridges share a broker.
//
// JSON field names and topic strings do not change: local tools rely on
// them.
//
// The package is pure: no I/O, no state.
package topics

import (
	"errors"
	"fmt"
	"strings"
)

// Kinds of Meshtastic topic (the segment after the "2").
const (
	KindEnvelope = "e"
	KindJSON     = "json"
	KindMap      = "map"
)

// DefaultRoot is the firmware's root before a region is known.
const DefaultRoot = "msh"

// version is the protocol-version segment the firmware has used since 1.3.
const version = "2"

// downlinkChannel is the channel segment the firmware's JSON downlink uses.
const downlinkChannel = "mqtt"

// PKIChannel is the channel segment of PKI-encrypted direct messages.
const PKIChannel = "PKI"

// Root returns the topic root: override when it is set, else "msh/<region>"
// as the firmware rewrites it once a region is chosen, else "msh".
func Root(override, region string) string {
	if override != "" {
		return strings.TrimSuffix(override, "/")
	}
	if region == "" || region == "UNSET" {
		return DefaultRoot
	}
	return DefaultRoot + "/" + region
}

// Envelope is the topic of a ServiceEnvelope published by gateway on channel.
func Envelope(root, channel, gateway string) string {
	return root + "/" + version + "/" + KindEnvelope + "/" + channel + "/" + gateway
}

// JSON is the topic of a firmware-2.7 JSON message published by gateway on channel.
func JSON(root, channel, gateway string) string {
	return root + "/" + version + "/" + KindJSON + "/" + channel + "/" + gateway
}

// EnvelopeFilter matches the envelopes of every gateway on channel, the
// subscription the firmware makes for a downlink-enabled channel.
func EnvelopeFilter(root, channel string) string {
	return root + "/" + version + "/" + KindEnvelope + "/" + channel + "/+"
}

// JSONFilter matches the JSON messages of every gateway on channel ("+"
// for every channel).
func JSONFilter(root, channel string) string {
	return root + "/" + version + "/" + KindJSON + "/" + channel + "/+"
}

// JSONDownlink is the topic local tools send JSON downlinks on,
// "<root>/2/json/mqtt/", as the firmware documents it.
func JSONDownlink(root string) string {
	return root + "/" + version + "/" + KindJSON + "/" + downlinkChannel + "/"
}

// JSONDownlinkFilter matches the JSON downlink topic "<root>/2/json/mqtt/".
func JSONDownlinkFilter(root string) string {
	return root + "/" + version + "/" + KindJSON + "/" + downlinkChannel + "/#"
}

// Map is the map-report topic.
func Map(root string) string {
	return root + "/" + version + "/" + KindMap + "/"
}

// Topic is a parsed Meshtastic topic.
type Topic struct {
	Root    string
	Kind    string
	Channel string // empty for map reports
	Gateway string // empty for map reports and the JSON downlink
}

// IsJSONDownlink reports whether t is the firmware's JSON downlink topic.
func (t Topic) IsJSONDownlink() bool {
	return t.Kind == KindJSON && t.Channel == downlinkChannel
}

// IsJSONDownlink reports whether topic is a JSON downlink topic under any
// root: the one topic local tools may write by default.
func IsJSONDownlink(topic string) bool {
	t, err := Parse(topic)
	return err == nil && t.IsJSONDownlink()
}

// ErrNotMeshtastic is returned by Parse for topics outside the layout.
var ErrNotMeshtastic = errors.New("not a Meshtastic topic")

// Parse splits a Meshtastic topic into its parts. The root may have any
// number of segments, so the layout is matched from the right.
func Parse(topic string) (Topic, error) {
	segs := strings.Split(topic, "/")
	n := len(segs)
	// <root>/2/map/
	if n >= 4 && segs[n-1] == "" && segs[n-2] == KindMap && segs[n-3] == version {
		return Topic{Root: strings.Join(segs[:n-3], "/"), Kind: KindMap}, nil
	}
	// <root>/2/<kind>/<channel>/<gateway>; the gateway may be empty on downlink.
	if n >= 5 && segs[n-4] == version && (segs[n-3] == KindEnvelope || segs[n-3] == KindJSON) && segs[n-2] != "" {
		t := Topic{Root: strings.Join(segs[:n-4], "/"), Kind: segs[n-3], Channel: segs[n-2], Gateway: segs[n-1]}
		if t.Root == "" {
			return Topic{}, fmt.Errorf("%w: %q has an empty root", ErrNotMeshtastic, topic)
		}
		if t.Gateway == "" && !t.IsJSONDownlink() {
			return Topic{}, fmt.Errorf("%w: %q has no gateway id", ErrNotMeshtastic, topic)
		}
		return t, nil
	}
	return Topic{}, fmt.Errorf("%w: %q", ErrNotMeshtastic, topic)
}

// Bridge topics: written only by the bridge (the broker refuses them to
// network clients unless a write rule names them). Several radio sides
// may meet on one broker: the streams name the radio in their payload
// (the envelope's gateway_id, the result's packet.from), and the retained
// records and the per-radio send topic end in the radio's gateway id, the
// "!xxxxxxxx" id of its node.
const (
	bridgeRoot = "sovereign"

	// MeshRX carries every packet heard by a radio as a decoded
	// ServiceEnvelope (channel_id = channel name, gateway_id = the radio).
	MeshRX = bridgeRoot + "/mesh/rx"
	// MeshTX carries packets to send on the mesh: SendRequest, a decoded
	// ServiceEnvelope whose gateway_id names the origin (OriginXMPP) and
	// whose packet id is the origin's request id. Every radio side on the
	// broker sends what comes on MeshTX itself; MeshTXTo(gateway) names one
	// radio, as the XMPP side always does. The outcome comes back on
	// MeshResult.
	MeshTX = bridgeRoot + "/mesh/tx"
	// MeshResult carries the outcome of each send request (and of each
	// JSON downlink, under OriginJSONDownlink): Result, a decoded
	// ROUTING_APP packet whose request_id is the request's id, whose
	// gateway_id is copied from the request and whose packet.from is the
	// radio's node number. A request refused before it was queued (too
	// large, the queue full, no such channel, the spool failing) gets
	// exactly one, with the reason.
	MeshResult = bridgeRoot + "/mesh/result"

	txPrefix     = MeshTX + "/"
	statusPrefix = bridgeRoot + "/bridge/status/"
	radioPrefix  = bridgeRoot + "/bridge/radio/"
	nodesPrefix  = bridgeRoot + "/mesh/nodes/"

	// StatusFilter matches every radio side's status record.
	StatusFilter = statusPrefix + "+"
	// RadioFilter matches every radio side's radio record.
	RadioFilter = radioPrefix + "+"
	// NodesFilter matches every retained node record (NodeRecord).
	NodesFilter = nodesPrefix + "+"
)

// IsBridgeTopic reports whether topic is one of the bridge's own, which
// only the bridge writes and which cross an external broker at QoS 1.
func IsBridgeTopic(topic string) bool { return strings.HasPrefix(topic, bridgeRoot+"/") }

// MeshTXTo is the send topic of the radio whose gateway id is gateway:
// SendRequest, as on MeshTX, sent by that radio alone.
func MeshTXTo(gateway string) string { return txPrefix + gateway }

// Status is the retained topic of a radio side's StatusRecord. An empty
// retained message there means the radio side no longer uses that radio.
func Status(gateway string) string { return statusPrefix + gateway }

// StatusGateway returns the gateway id of a Status topic.
func StatusGateway(topic string) (string, bool) { return lastSegment(topic, statusPrefix) }

// Radio is the retained topic of a radio side's RadioRecord.
func Radio(gateway string) string { return radioPrefix + gateway }

// RadioGateway returns the gateway id of a Radio topic.
func RadioGateway(topic string) (string, bool) { return lastSegment(topic, radioPrefix) }

// Node is the retained topic of one node's record, keyed by its "!xxxxxxxx" id.
func Node(id string) string { return nodesPrefix + id }

// NodeID returns the node id of a Node topic.
func NodeID(topic string) (string, bool) { return lastSegment(topic, nodesPrefix) }

func lastSegment(topic, prefix string) (string, bool) {
	id, ok := strings.CutPrefix(topic, prefix)
	return id, ok && id != "" && !strings.Contains(id, "/")
}
