// Package meshpb holds SovereignRelay's own protobuf schema for the subset of
// the Meshtastic wire format the bridge speaks: the stream API (ToRadio /
// FromRadio), MeshPacket and Data, the application payloads we decode
// (User, Position, Telemetry, Routing, NeighborInfo, Waypoint, Paxcount, ...),
// the configuration messages we read or write, and the MQTT ServiceEnvelope
// and MapReport.
//
// The schema lives in meshtastic.proto and is hand-written; only field names,
// numbers, types and enum values follow the official Meshtastic definitions,
// so encodings are byte-compatible with Meshtastic firmware and clients.
// Anything not modelled (omitted oneof variants such as
// FromRadio.deviceuiConfig or FromRadio.fileInfo, newer fields) is kept as
// unknown fields and survives a decode/encode round trip unchanged.
//
// # Regenerating
//
// meshtastic.pb.go is generated. From the repository root run
//
//	go generate ./meshpb/
//
// This needs Debian's protoc 3.21.12 (package protobuf-compiler) on PATH; the
// first directive below refuses to run with any other protoc, because the
// version is recorded in the generated header. protoc-gen-go is not taken
// from PATH: it is built from the version pinned by the `tool` line in go.mod
// (go tool -n builds it into the Go build cache and prints its path), so
// nothing is written into the repository except meshtastic.pb.go. CI can check
// that the checked-in file is current with
//
//	go generate ./meshpb/ && git diff --exit-code -- meshpb/
package meshpb

//go:generate sh -c "test \"$(protoc --version)\" = \"libprotoc 3.21.12\" || { echo \"meshpb: need protoc 3.21.12 (Debian protobuf-compiler), found: $(protoc --version)\" >&2; exit 1; }"
//go:generate sh -c "go tool -n protoc-gen-go >/dev/null && protoc --plugin=protoc-gen-go=\"$(go tool -n protoc-gen-go)\" --proto_path=.. --go_out=.. --go_opt=paths=source_relative ../meshpb/meshtastic.proto"
