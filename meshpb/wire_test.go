package meshpb_test

import (
	"bytes"
	"encoding/hex"
	"math"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/jshiffer/lora-xmpp-bridge/meshpb"
)

// A tiny hand-rolled encoder on top of protowire. The expected bytes in these
// tests are built from the documented field numbers and wire types only, not
// from the generated code, so a wrong number or type in meshtastic.proto shows
// up as a mismatch.

type field func([]byte) []byte

func msg(fs ...field) []byte {
	var b []byte
	for _, f := range fs {
		b = f(b)
	}
	return b
}

// varint field (uint32, bool, enum, non-negative int32).
func vint(n protowire.Number, v uint64) field {
	return func(b []byte) []byte {
		b = protowire.AppendTag(b, n, protowire.VarintType)
		return protowire.AppendVarint(b, v)
	}
}

// int32 field: negative values are sign-extended to 64 bits (10 bytes).
func i32(n protowire.Number, v int32) field { return vint(n, uint64(int64(v))) }

// sint32 field: zigzag varint.
func s32(n protowire.Number, v int32) field { return vint(n, protowire.EncodeZigZag(int64(v))) }

func fx32(n protowire.Number, v uint32) field {
	return func(b []byte) []byte {
		b = protowire.AppendTag(b, n, protowire.Fixed32Type)
		return protowire.AppendFixed32(b, v)
	}
}

func sfx32(n protowire.Number, v int32) field { return fx32(n, uint32(v)) }

func f32(n protowire.Number, v float32) field { return fx32(n, math.Float32bits(v)) }

func fx64(n protowire.Number, v uint64) field {
	return func(b []byte) []byte {
		b = protowire.AppendTag(b, n, protowire.Fixed64Type)
		return protowire.AppendFixed64(b, v)
	}
}

func byt(n protowire.Number, v []byte) field {
	return func(b []byte) []byte {
		b = protowire.AppendTag(b, n, protowire.BytesType)
		return protowire.AppendBytes(b, v)
	}
}

func str(n protowire.Number, v string) field { return byt(n, []byte(v)) }

// sub encodes a nested message.
func sub(n protowire.Number, fs ...field) field { return byt(n, msg(fs...)) }

// packed repeated varints (proto3 default for repeated scalars).
func packedVarint(n protowire.Number, vs ...uint64) field {
	var p []byte
	for _, v := range vs {
		p = protowire.AppendVarint(p, v)
	}
	return byt(n, p)
}

// negVarint is the varint payload of a negative int32 (sign-extended).
func negVarint(v int32) uint64 { return uint64(int64(v)) }

func packedFx32(n protowire.Number, vs ...uint32) field {
	var p []byte
	for _, v := range vs {
		p = protowire.AppendFixed32(p, v)
	}
	return byt(n, p)
}

// hasUnknown reports whether m or any message nested in it holds unknown
// fields.
func hasUnknown(m protoreflect.Message) bool {
	if len(m.GetUnknown()) > 0 {
		return true
	}
	found := false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len() && !found; i++ {
				found = hasUnknown(l.Get(i).Message())
			}
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			found = hasUnknown(v.Message())
		}
		return !found
	})
	return found
}

func TestUnknownFieldsSurviveRoundTrip(t *testing.T) {
	// The fixtures are written in the order Go's marshaller emits fields:
	// regular fields by number, then the set oneof member, then unknown fields
	// in the order they were read. (Firmware/nanopb writes strictly by field
	// number; decoding does not care, but a byte-for-byte comparison does.)
	meshPacket := func(extra ...field) field {
		fs := []field{
			fx32(1, 0x0badcafe),
			fx32(2, 0xffffffff),
			fx32(6, 0x12345678),
			sub(4, vint(1, 1), str(2, "hello mesh")),
		}
		return sub(2, append(fs, extra...)...)
	}

	tests := []struct {
		name string
		new  func() proto.Message
		wire []byte
	}{
		{
			name: "FromRadio.deviceuiConfig (17)",
			new:  func() proto.Message { return new(pb.FromRadio) },
			wire: msg(vint(1, 42), sub(17, vint(1, 1), vint(2, 30), str(14, "de"))),
		},
		{
			name: "FromRadio.fileInfo (15)",
			new:  func() proto.Message { return new(pb.FromRadio) },
			wire: msg(vint(1, 43), sub(15, str(1, "/prefs/config.proto"), vint(2, 1234))),
		},
		{
			name: "FromRadio.xmodemPacket (12)",
			new:  func() proto.Message { return new(pb.FromRadio) },
			wire: msg(vint(1, 44), sub(12, vint(1, 1), vint(2, 3), byt(3, []byte{1, 2, 3}), vint(4, 0xbeef))),
		},
		{
			name: "FromRadio.lockdown_status (18)",
			new:  func() proto.Message { return new(pb.FromRadio) },
			wire: msg(vint(1, 45), sub(18, vint(1, 2), str(2, "needs_auth"))),
		},
		{
			name: "FromRadio.region_presets (19)",
			new:  func() proto.Message { return new(pb.FromRadio) },
			wire: msg(sub(19, sub(1, packedVarint(1, 0, 3, 4), vint(2, 0)), sub(2, vint(1, 3), vint(2, 0)))),
		},
		{
			name: "FromRadio.packet with unknown MeshPacket fields 23 and 24",
			new:  func() proto.Message { return new(pb.FromRadio) },
			wire: msg(vint(1, 46), meshPacket(vint(23, 1), vint(24, 2))),
		},
		{
			name: "MeshPacket with unknown varint, fixed64 and bytes fields",
			new:  func() proto.Message { return new(pb.MeshPacket) },
			wire: msg(fx32(1, 1), fx32(2, 2), fx32(6, 3), byt(5, []byte{0xde, 0xad}), vint(23, 3), fx64(99, 0x0102030405060708), str(100, "future")),
		},
		{
			name: "ToRadio.xmodemPacket (5)",
			new:  func() proto.Message { return new(pb.ToRadio) },
			wire: msg(sub(5, vint(1, 1), vint(2, 1), byt(3, []byte("chunk")))),
		},
		{
			name: "Config.position (2)",
			new:  func() proto.Message { return new(pb.FromRadio) },
			wire: msg(sub(5, sub(2, vint(1, 900), vint(2, 1)))),
		},
		{
			name: "ModuleConfig.serial (2)",
			new:  func() proto.Message { return new(pb.FromRadio) },
			wire: msg(sub(9, sub(2, vint(1, 1), vint(5, 11)))),
		},
		{
			name: "Telemetry.health_metrics (7)",
			new:  func() proto.Message { return new(pb.Telemetry) },
			wire: msg(fx32(1, 1700000000), sub(7, vint(1, 72), vint(2, 98))),
		},
		{
			name: "Routing.ack_proof (4) next to error_reason",
			new:  func() proto.Message { return new(pb.Routing) },
			wire: msg(vint(3, 0), byt(4, []byte{1, 2, 3, 4, 5, 6, 7, 8})),
		},
		{
			name: "EnvironmentMetrics one-wire temperatures (23)",
			new:  func() proto.Message { return new(pb.Telemetry) },
			wire: msg(sub(3, f32(1, 21.5), packedFx32(23, math.Float32bits(4.5), math.Float32bits(5.5)))),
		},
		{
			name: "ClientNotification key verification variant (13)",
			new:  func() proto.Message { return new(pb.FromRadio) },
			wire: msg(sub(16, vint(1, 7), fx32(2, 1700000000), vint(3, 30), str(4, "verify"), sub(13, vint(1, 99), str(2, "Bob")))),
		},
		{
			name: "NodeInfo and User newer fields",
			new:  func() proto.Message { return new(pb.FromRadio) },
			wire: msg(sub(4, vint(1, 0x0badcafe), sub(2, str(1, "!0badcafe"), vint(10, 1)), vint(15, 1))),
		},
		{
			name: "Waypoint geofence fields (9, 10)",
			new:  func() proto.Message { return new(pb.Waypoint) },
			wire: msg(vint(1, 5), str(6, "camp"), vint(9, 250), sub(10, sfx32(1, -1), sfx32(2, 2))),
		},
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.new()
			if err := proto.Unmarshal(tc.wire, m); err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if !hasUnknown(m.ProtoReflect()) {
				t.Fatalf("expected unknown fields after decoding, got none: %v", m)
			}
			out, err := proto.Marshal(m)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			if !bytes.Equal(out, tc.wire) {
				t.Fatalf("round trip changed the bytes\n got %s\nwant %s", hex.EncodeToString(out), hex.EncodeToString(tc.wire))
			}
		})
	}
}

// Frames from the radio are written strictly in field-number order, which is
// not Go's canonical order when a oneof sits between regular fields. Decoding
// such a frame and re-encoding it must still keep every unknown byte.
func TestUnknownFieldsSurviveFirmwareOrder(t *testing.T) {
	wire := msg(
		vint(1, 7),
		sub(2,
			fx32(1, 0x0badcafe),
			fx32(2, 0xffffffff),
			sub(4, vint(1, 1), str(2, "hi"), vint(9, 1), vint(11, 5)),
			fx32(6, 0x12345678),
			vint(23, 1),
		),
	)
	var first pb.FromRadio
	if err := proto.Unmarshal(wire, &first); err != nil {
		t.Fatal(err)
	}
	out, err := proto.Marshal(&first)
	if err != nil {
		t.Fatal(err)
	}
	var second pb.FromRadio
	if err := proto.Unmarshal(out, &second); err != nil {
		t.Fatal(err)
	}
	// proto.Equal compares unknown fields byte for byte as well.
	if !proto.Equal(&first, &second) {
		t.Fatalf("re-encoding lost data\nfirst  %v\nsecond %v", &first, &second)
	}
	pkt := second.GetPacket()
	if got := pkt.ProtoReflect().GetUnknown(); !bytes.Equal(got, msg(vint(23, 1))) {
		t.Errorf("MeshPacket unknown fields = %x", got)
	}
	if got := pkt.GetDecoded().ProtoReflect().GetUnknown(); !bytes.Equal(got, msg(vint(11, 5))) {
		t.Errorf("Data unknown fields = %x", got)
	}
	if pkt.GetDecoded().Bitfield == nil || pkt.GetDecoded().GetBitfield() != 1 {
		t.Errorf("bitfield = %v", pkt.GetDecoded().Bitfield)
	}
}

func TestGoldenWire(t *testing.T) {
	// wire is written strictly by field number, as the firmware does. Where a
	// oneof member sits between regular fields, Go emits it after them, so
	// goOrder gives the same fields in the order proto.Marshal produces.
	tests := []struct {
		name    string
		wire    []byte
		goOrder []byte
		want    proto.Message
	}{
		{
			name: "ToRadio.want_config_id is varint field 3",
			wire: msg(vint(3, 0x1234abcd)),
			want: &pb.ToRadio{PayloadVariant: &pb.ToRadio_WantConfigId{WantConfigId: 0x1234abcd}},
		},
		{
			name: "ToRadio.heartbeat is field 7, nonce varint 1",
			wire: msg(sub(7, vint(1, 5))),
			want: &pb.ToRadio{PayloadVariant: &pb.ToRadio_Heartbeat{Heartbeat: &pb.Heartbeat{Nonce: 5}}},
		},
		{
			name: "ToRadio.heartbeat with nonce 0 is an empty message",
			wire: msg(sub(7)),
			want: &pb.ToRadio{PayloadVariant: &pb.ToRadio_Heartbeat{Heartbeat: &pb.Heartbeat{}}},
		},
		{
			name: "ToRadio.disconnect is bool field 4",
			wire: msg(vint(4, 1)),
			want: &pb.ToRadio{PayloadVariant: &pb.ToRadio_Disconnect{Disconnect: true}},
		},
		{
			name:    "ToRadio.mqttClientProxyMessage is field 6",
			wire:    msg(sub(6, str(1, "msh/US/2/e/LongFast/!0badcafe"), byt(2, []byte{0x0a, 0x00}), vint(4, 1))),
			goOrder: msg(sub(6, str(1, "msh/US/2/e/LongFast/!0badcafe"), vint(4, 1), byt(2, []byte{0x0a, 0x00}))),
			want: &pb.ToRadio{PayloadVariant: &pb.ToRadio_MqttClientProxyMessage{MqttClientProxyMessage: &pb.MqttClientProxyMessage{
				Topic:          "msh/US/2/e/LongFast/!0badcafe",
				PayloadVariant: &pb.MqttClientProxyMessage_Data{Data: []byte{0x0a, 0x00}},
				Retained:       true,
			}}},
		},
		{
			name: "ToRadio.packet: text message with fixed32 from/to/id",
			wire: msg(sub(1,
				fx32(2, 0xffffffff),
				vint(3, 1),
				sub(4, vint(1, 1), str(2, "hi"), vint(3, 1)),
				fx32(6, 0xcafef00d),
				vint(9, 3),
				vint(10, 1),
				vint(11, 70),
			)),
			goOrder: msg(sub(1,
				fx32(2, 0xffffffff),
				vint(3, 1),
				fx32(6, 0xcafef00d),
				vint(9, 3),
				vint(10, 1),
				vint(11, 70),
				sub(4, vint(1, 1), str(2, "hi"), vint(3, 1)),
			)),
			want: &pb.ToRadio{PayloadVariant: &pb.ToRadio_Packet{Packet: &pb.MeshPacket{
				To:      0xffffffff,
				Channel: 1,
				PayloadVariant: &pb.MeshPacket_Decoded{Decoded: &pb.Data{
					Portnum:      pb.PortNum_TEXT_MESSAGE_APP,
					Payload:      []byte("hi"),
					WantResponse: true,
				}},
				Id:       0xcafef00d,
				HopLimit: 3,
				WantAck:  true,
				Priority: pb.MeshPacket_RELIABLE,
			}}},
		},
		{
			name: "FromRadio.packet: received packet with all header fields",
			wire: msg(
				vint(1, 9),
				sub(2,
					fx32(1, 0xdeadbeef),
					fx32(2, 0x0badcafe),
					vint(3, 8),
					byt(5, []byte{0x01, 0x02, 0x03}),
					fx32(6, 0x01020304),
					fx32(7, 1754000000),
					f32(8, 6.25),
					vint(9, 2),
					vint(11, 120),
					i32(12, -97),
					vint(13, 1),
					vint(14, 1),
					vint(15, 3),
					byt(16, []byte{0xaa, 0xbb}),
					vint(17, 1),
					vint(18, 0x42),
					vint(19, 0xef),
					vint(20, 77),
					vint(21, 5),
					vint(22, 1),
				),
			),
			goOrder: msg(
				vint(1, 9),
				sub(2,
					fx32(1, 0xdeadbeef),
					fx32(2, 0x0badcafe),
					vint(3, 8),
					fx32(6, 0x01020304),
					fx32(7, 1754000000),
					f32(8, 6.25),
					vint(9, 2),
					vint(11, 120),
					i32(12, -97),
					vint(13, 1),
					vint(14, 1),
					vint(15, 3),
					byt(16, []byte{0xaa, 0xbb}),
					vint(17, 1),
					vint(18, 0x42),
					vint(19, 0xef),
					vint(20, 77),
					vint(21, 5),
					vint(22, 1),
					byt(5, []byte{0x01, 0x02, 0x03}),
				),
			),
			want: &pb.FromRadio{Id: 9, PayloadVariant: &pb.FromRadio_Packet{Packet: &pb.MeshPacket{
				From:               0xdeadbeef,
				To:                 0x0badcafe,
				Channel:            8,
				PayloadVariant:     &pb.MeshPacket_Encrypted{Encrypted: []byte{0x01, 0x02, 0x03}},
				Id:                 0x01020304,
				RxTime:             proto.Uint32(1754000000),
				RxSnr:              6.25,
				HopLimit:           2,
				Priority:           pb.MeshPacket_ACK,
				RxRssi:             proto.Int32(-97),
				Delayed:            pb.MeshPacket_DELAYED_BROADCAST,
				ViaMqtt:            true,
				HopStart:           3,
				PublicKey:          []byte{0xaa, 0xbb},
				PkiEncrypted:       true,
				NextHop:            0x42,
				RelayNode:          0xef,
				TxAfter:            77,
				TransportMechanism: pb.MeshPacket_TRANSPORT_MQTT,
				XeddsaSigned:       true,
			}}},
		},
		{
			name: "Data: fixed32 ids, emoji reaction and explicit bitfield 0",
			wire: msg(
				vint(1, 1),
				byt(2, []byte("👍")),
				fx32(4, 11),
				fx32(5, 22),
				fx32(6, 33),
				fx32(7, 44),
				fx32(8, 1),
				vint(9, 0),
				byt(10, []byte{9, 9}),
			),
			want: &pb.Data{
				Portnum:         pb.PortNum_TEXT_MESSAGE_APP,
				Payload:         []byte("👍"),
				Dest:            11,
				Source:          22,
				RequestId:       33,
				ReplyId:         44,
				Emoji:           1,
				Bitfield:        proto.Uint32(0),
				XeddsaSignature: []byte{9, 9},
			},
		},
		{
			name: "FromRadio.queueStatus is field 11",
			wire: msg(vint(1, 3), sub(11, i32(1, -3), vint(2, 15), vint(3, 16), vint(4, 0xcafef00d))),
			want: &pb.FromRadio{Id: 3, PayloadVariant: &pb.FromRadio_QueueStatus{QueueStatus: &pb.QueueStatus{
				Res: -3, Free: 15, Maxlen: 16, MeshPacketId: 0xcafef00d,
			}}},
		},
		{
			name: "FromRadio.config_complete_id is varint field 7",
			wire: msg(vint(7, 69420)),
			want: &pb.FromRadio{PayloadVariant: &pb.FromRadio_ConfigCompleteId{ConfigCompleteId: 69420}},
		},
		{
			name: "FromRadio.rebooted is bool field 8",
			wire: msg(vint(8, 1)),
			want: &pb.FromRadio{PayloadVariant: &pb.FromRadio_Rebooted{Rebooted: true}},
		},
		{
			name: "FromRadio.my_info",
			wire: msg(sub(3, vint(1, 0x0badcafe), vint(8, 12), vint(11, 30200), byt(12, []byte{1, 2}), str(13, "heltec-v3"), vint(14, 17), vint(15, 250))),
			want: &pb.FromRadio{PayloadVariant: &pb.FromRadio_MyInfo{MyInfo: &pb.MyNodeInfo{
				MyNodeNum: 0x0badcafe, RebootCount: 12, MinAppVersion: 30200, DeviceId: []byte{1, 2},
				PioEnv: "heltec-v3", FirmwareEdition: pb.FirmwareEdition_DEFCON, NodedbCount: 250,
			}}},
		},
		{
			name: "FromRadio.node_info with User, Position and DeviceMetrics",
			wire: msg(sub(4,
				vint(1, 0x0badcafe),
				sub(2, str(1, "!0badcafe"), str(2, "Relay"), str(3, "SR"), vint(5, 43), vint(6, 1), vint(7, 12), byt(8, []byte{7}), vint(9, 0)),
				sub(3, sfx32(1, 525200000), sfx32(2, -134050000), i32(3, -5)),
				f32(4, -7.5),
				fx32(5, 1754000001),
				sub(6, vint(1, 101), f32(2, 4.125)),
				vint(7, 2),
				vint(8, 1),
				vint(9, 0),
				vint(10, 1),
				vint(11, 1),
				vint(12, 1),
				vint(13, 1),
				vint(14, 1),
			)),
			want: &pb.FromRadio{PayloadVariant: &pb.FromRadio_NodeInfo{NodeInfo: &pb.NodeInfo{
				Num: 0x0badcafe,
				User: &pb.User{
					Id: "!0badcafe", LongName: "Relay", ShortName: "SR", HwModel: pb.HardwareModel_HELTEC_V3,
					IsLicensed: true, Role: pb.Config_DeviceConfig_CLIENT_BASE, PublicKey: []byte{7},
					IsUnmessagable: proto.Bool(false),
				},
				Position:              &pb.Position{LatitudeI: proto.Int32(525200000), LongitudeI: proto.Int32(-134050000), Altitude: proto.Int32(-5)},
				Snr:                   -7.5,
				LastHeard:             1754000001,
				DeviceMetrics:         &pb.DeviceMetrics{BatteryLevel: proto.Uint32(101), Voltage: proto.Float32(4.125)},
				Channel:               2,
				ViaMqtt:               true,
				HopsAway:              proto.Uint32(0),
				IsFavorite:            true,
				IsIgnored:             true,
				IsKeyManuallyVerified: true,
				IsMuted:               true,
				HasXeddsaSigned:       true,
			}}},
		},
		{
			name: "FromRadio.metadata is field 13",
			wire: msg(sub(13, str(1, "2.7.15.567b8ea"), vint(2, 24), vint(3, 1), vint(4, 1), vint(5, 1), vint(7, 2), vint(8, 811), vint(9, 9), vint(11, 1), vint(12, 0x1000), vint(14, 1))),
			want: &pb.FromRadio{PayloadVariant: &pb.FromRadio_Metadata{Metadata: &pb.DeviceMetadata{
				FirmwareVersion: "2.7.15.567b8ea", DeviceStateVersion: 24, CanShutdown: true, HasWifi: true,
				HasBluetooth: true, Role: pb.Config_DeviceConfig_ROUTER, PositionFlags: 811,
				HwModel: pb.HardwareModel_RAK4631, HasPKC: true, ExcludedModules: 0x1000, HasXeddsa: true,
			}}},
		},
		{
			name: "FromRadio.channel is field 10",
			wire: msg(sub(10, vint(1, 1), sub(2, byt(2, []byte{1}), str(3, "bridge"), fx32(4, 0x11223344), vint(5, 1), vint(6, 1), sub(7, vint(1, 13), vint(2, 1))), vint(3, 2))),
			want: &pb.FromRadio{PayloadVariant: &pb.FromRadio_Channel{Channel: &pb.Channel{
				Index: 1,
				Settings: &pb.ChannelSettings{
					Psk: []byte{1}, Name: "bridge", Id: 0x11223344, UplinkEnabled: true, DownlinkEnabled: true,
					ModuleSettings: &pb.ModuleSettings{PositionPrecision: 13, IsMuted: true},
				},
				Role: pb.Channel_SECONDARY,
			}}},
		},
		{
			name: "FromRadio.config lora (6) with fields 103-107",
			wire: msg(sub(5, sub(6,
				vint(1, 1),
				vint(2, 16),
				vint(3, 250),
				vint(4, 11),
				vint(5, 5),
				f32(6, 0.5),
				vint(7, 3),
				vint(8, 3),
				vint(9, 1),
				i32(10, -4),
				vint(11, 20),
				vint(12, 1),
				vint(13, 1),
				f32(14, 869.525),
				vint(15, 1),
				packedVarint(103, 0xdeadbeef, 7),
				vint(104, 1),
				vint(105, 1),
				vint(106, 2),
				vint(107, 1),
			))),
			want: &pb.FromRadio{PayloadVariant: &pb.FromRadio_Config{Config: &pb.Config{PayloadVariant: &pb.Config_Lora{Lora: &pb.Config_LoRaConfig{
				UsePreset: true, ModemPreset: pb.Config_LoRaConfig_MEDIUM_TURBO, Bandwidth: 250, SpreadFactor: 11,
				CodingRate: 5, FrequencyOffset: 0.5, Region: pb.Config_LoRaConfig_EU_868, HopLimit: 3, TxEnabled: true,
				TxPower: -4, ChannelNum: 20, OverrideDutyCycle: true, Sx126XRxBoostedGain: true,
				OverrideFrequency: 869.525, PaFanDisabled: true, IgnoreIncoming: []uint32{0xdeadbeef, 7},
				IgnoreMqtt: true, ConfigOkToMqtt: true, FemLnaMode: pb.Config_LoRaConfig_NOT_PRESENT, SerialHalOnly: true,
			}}}}},
		},
		{
			name: "Config device (1)",
			wire: msg(sub(1, vint(1, 11), vint(6, 2), vint(7, 10800), str(11, "CET-1CEST"), vint(13, 4))),
			want: &pb.Config{PayloadVariant: &pb.Config_Device{Device: &pb.Config_DeviceConfig{
				Role: pb.Config_DeviceConfig_ROUTER_LATE, RebroadcastMode: pb.Config_DeviceConfig_LOCAL_ONLY,
				NodeInfoBroadcastSecs: 10800, Tzdef: "CET-1CEST", BuzzerMode: pb.Config_DeviceConfig_DIRECT_MSG_ONLY,
			}}},
		},
		{
			name: "Config security (8)",
			wire: msg(sub(8, byt(1, []byte{1}), byt(3, []byte{2}), byt(3, []byte{3}), vint(5, 1), vint(6, 1), vint(8, 1))),
			want: &pb.Config{PayloadVariant: &pb.Config_Security{Security: &pb.Config_SecurityConfig{
				PublicKey: []byte{1}, AdminKey: [][]byte{{2}, {3}}, SerialEnabled: true, DebugLogApiEnabled: true, AdminChannelEnabled: true,
			}}},
		},
		{
			name: "FromRadio.moduleConfig mqtt (1) with map report settings",
			wire: msg(sub(9, sub(1,
				vint(1, 1),
				str(2, "127.0.0.1"),
				str(3, "meshdev"),
				str(4, "large4cats"),
				vint(5, 1),
				vint(7, 1),
				str(8, "msh/EU_868"),
				vint(9, 1),
				vint(10, 1),
				sub(11, vint(1, 3600), vint(2, 14), vint(3, 1)),
			))),
			want: &pb.FromRadio{PayloadVariant: &pb.FromRadio_ModuleConfig{ModuleConfig: &pb.ModuleConfig{PayloadVariant: &pb.ModuleConfig_Mqtt{Mqtt: &pb.ModuleConfig_MQTTConfig{
				Enabled: true, Address: "127.0.0.1", Username: "meshdev", Password: "large4cats", EncryptionEnabled: true,
				TlsEnabled: true, Root: "msh/EU_868", ProxyToClientEnabled: true, MapReportingEnabled: true,
				MapReportSettings: &pb.ModuleConfig_MapReportSettings{PublishIntervalSecs: 3600, PositionPrecision: 14, ShouldReportLocation: true},
			}}}}},
		},
		{
			name: "ModuleConfig telemetry (6)",
			wire: msg(sub(6, vint(1, 1800), vint(14, 1), vint(15, 1))),
			want: &pb.ModuleConfig{PayloadVariant: &pb.ModuleConfig_Telemetry{Telemetry: &pb.ModuleConfig_TelemetryConfig{
				DeviceUpdateInterval: 1800, DeviceTelemetryEnabled: true, AirQualityScreenEnabled: true,
			}}},
		},
		{
			name: "ModuleConfig neighbor_info (10)",
			wire: msg(sub(10, vint(1, 1), vint(2, 14400), vint(3, 1))),
			want: &pb.ModuleConfig{PayloadVariant: &pb.ModuleConfig_NeighborInfo{NeighborInfo: &pb.ModuleConfig_NeighborInfoConfig{
				Enabled: true, UpdateInterval: 14400, TransmitOverLora: true,
			}}},
		},
		{
			name: "FromRadio.log_record is field 6",
			wire: msg(sub(6, str(1, "booted"), fx32(2, 1754000002), str(3, "Main"), vint(4, 20))),
			want: &pb.FromRadio{PayloadVariant: &pb.FromRadio_LogRecord{LogRecord: &pb.LogRecord{
				Message: "booted", Time: 1754000002, Source: "Main", Level: pb.LogRecord_INFO,
			}}},
		},
		{
			name: "FromRadio.clientNotification is field 16 with optional reply_id 0",
			wire: msg(sub(16, vint(1, 0), fx32(2, 1754000003), vint(3, 30), str(4, "Duty cycle limit exceeded"))),
			want: &pb.FromRadio{PayloadVariant: &pb.FromRadio_ClientNotification{ClientNotification: &pb.ClientNotification{
				ReplyId: proto.Uint32(0), Time: 1754000003, Level: pb.LogRecord_WARNING, Message: "Duty cycle limit exceeded",
			}}},
		},
		{
			name: "FromRadio.mqttClientProxyMessage is field 14 (text variant)",
			wire: msg(sub(14, str(1, "msh/US/2/json/LongFast/!0badcafe"), str(3, "{}"))),
			want: &pb.FromRadio{PayloadVariant: &pb.FromRadio_MqttClientProxyMessage{MqttClientProxyMessage: &pb.MqttClientProxyMessage{
				Topic: "msh/US/2/json/LongFast/!0badcafe", PayloadVariant: &pb.MqttClientProxyMessage_Text{Text: "{}"},
			}}},
		},
		{
			name: "Routing.error_reason is enum field 3",
			wire: msg(vint(3, 38)),
			want: &pb.Routing{Variant: &pb.Routing_ErrorReason{ErrorReason: pb.Routing_RATE_LIMIT_EXCEEDED}},
		},
		{
			name: "Routing.route_reply with packed RouteDiscovery",
			wire: msg(sub(2,
				packedFx32(1, 0x11111111, 0x22222222),
				packedVarint(2, negVarint(-20), 24),
				packedFx32(3, 0x33333333),
				packedVarint(4, 8),
			)),
			want: &pb.Routing{Variant: &pb.Routing_RouteReply{RouteReply: &pb.RouteDiscovery{
				Route: []uint32{0x11111111, 0x22222222}, SnrTowards: []int32{-20, 24},
				RouteBack: []uint32{0x33333333}, SnrBack: []int32{8},
			}}},
		},
		{
			name: "Position: sfixed32 lat/lon, sint32 altitude_hae, uint32 DOPs",
			wire: msg(
				sfx32(1, -337000000),
				sfx32(2, 1512000000),
				i32(3, 42),
				fx32(4, 1754000004),
				vint(5, 2),
				vint(6, 4),
				fx32(7, 1754000005),
				i32(8, -250),
				s32(9, -12),
				s32(10, 47),
				vint(11, 150),
				vint(12, 90),
				vint(13, 120),
				vint(14, 3000),
				vint(15, 0),
				vint(16, 27000),
				vint(17, 1),
				vint(18, 3),
				vint(19, 9),
				vint(20, 1),
				vint(21, 60),
				vint(22, 99),
				vint(23, 32),
			),
			want: &pb.Position{
				LatitudeI: proto.Int32(-337000000), LongitudeI: proto.Int32(1512000000), Altitude: proto.Int32(42),
				Time: 1754000004, LocationSource: pb.Position_LOC_INTERNAL, AltitudeSource: pb.Position_ALT_BAROMETRIC,
				Timestamp: 1754000005, TimestampMillisAdjust: -250, AltitudeHae: proto.Int32(-12),
				AltitudeGeoidalSeparation: proto.Int32(47), PDOP: 150, HDOP: 90, VDOP: 120, GpsAccuracy: 3000,
				GroundSpeed: proto.Uint32(0), GroundTrack: proto.Uint32(27000), FixQuality: 1, FixType: 3,
				SatsInView: 9, SensorId: 1, NextUpdate: 60, SeqNumber: 99, PrecisionBits: 32,
			},
		},
		{
			name: "Telemetry: time fixed32 1, device_metrics 2",
			wire: msg(fx32(1, 1754000006), sub(2, vint(1, 87), f32(2, 3.95), f32(3, 12.5), f32(4, 1.25), vint(5, 86400))),
			want: &pb.Telemetry{Time: 1754000006, Variant: &pb.Telemetry_DeviceMetrics{DeviceMetrics: &pb.DeviceMetrics{
				BatteryLevel: proto.Uint32(87), Voltage: proto.Float32(3.95), ChannelUtilization: proto.Float32(12.5),
				AirUtilTx: proto.Float32(1.25), UptimeSeconds: proto.Uint32(86400),
			}}},
		},
		{
			name: "Telemetry: environment_metrics 3 with integer fields 7, 13, 21",
			wire: msg(sub(3, f32(1, -3.5), f32(2, 80), f32(3, 1013.25), vint(7, 55), vint(13, 270), f32(14, 4.5), vint(21, 40), f32(22, 11))),
			want: &pb.Telemetry{Variant: &pb.Telemetry_EnvironmentMetrics{EnvironmentMetrics: &pb.EnvironmentMetrics{
				Temperature: proto.Float32(-3.5), RelativeHumidity: proto.Float32(80), BarometricPressure: proto.Float32(1013.25),
				Iaq: proto.Uint32(55), WindDirection: proto.Uint32(270), WindSpeed: proto.Float32(4.5),
				SoilMoisture: proto.Uint32(40), SoilTemperature: proto.Float32(11),
			}}},
		},
		{
			name: "Telemetry: local_stats 6 with int32 noise_floor 15",
			wire: msg(sub(6, vint(1, 3600), f32(2, 22.5), f32(3, 2.5), vint(4, 10), vint(5, 200), vint(6, 3), vint(7, 12), vint(8, 40), vint(9, 50), vint(10, 6), vint(11, 2), vint(12, 300000), vint(13, 120000), vint(14, 1), i32(15, -110))),
			want: &pb.Telemetry{Variant: &pb.Telemetry_LocalStats{LocalStats: &pb.LocalStats{
				UptimeSeconds: 3600, ChannelUtilization: 22.5, AirUtilTx: 2.5, NumPacketsTx: 10, NumPacketsRx: 200,
				NumPacketsRxBad: 3, NumOnlineNodes: 12, NumTotalNodes: 40, NumRxDupe: 50, NumTxRelay: 6,
				NumTxRelayCanceled: 2, HeapTotalBytes: 300000, HeapFreeBytes: 120000, NumTxDropped: 1, NoiseFloor: -110,
			}}},
		},
		{
			name:    "ServiceEnvelope: packet 1, channel_id 2, gateway_id 3",
			wire:    msg(sub(1, fx32(1, 0xdeadbeef), fx32(2, 0xffffffff), vint(3, 8), byt(5, []byte{0x99}), fx32(6, 7), vint(9, 3), vint(15, 3)), str(2, "LongFast"), str(3, "!0badcafe")),
			goOrder: msg(sub(1, fx32(1, 0xdeadbeef), fx32(2, 0xffffffff), vint(3, 8), fx32(6, 7), vint(9, 3), vint(15, 3), byt(5, []byte{0x99})), str(2, "LongFast"), str(3, "!0badcafe")),
			want: &pb.ServiceEnvelope{
				Packet: &pb.MeshPacket{
					From: 0xdeadbeef, To: 0xffffffff, Channel: 8,
					PayloadVariant: &pb.MeshPacket_Encrypted{Encrypted: []byte{0x99}}, Id: 7, HopLimit: 3, HopStart: 3,
				},
				ChannelId: "LongFast",
				GatewayId: "!0badcafe",
			},
		},
		{
			name: "MapReport",
			wire: msg(str(1, "Relay"), str(2, "SR"), vint(3, 2), vint(4, 43), str(5, "2.7.26.54e0d8d"), vint(6, 3), vint(8, 1), sfx32(9, 525000000), sfx32(10, -13000000), i32(11, 35), vint(12, 14), vint(13, 5), vint(14, 1)),
			want: &pb.MapReport{
				LongName: "Relay", ShortName: "SR", Role: pb.Config_DeviceConfig_ROUTER, HwModel: pb.HardwareModel_HELTEC_V3,
				FirmwareVersion: "2.7.26.54e0d8d", Region: pb.Config_LoRaConfig_EU_868, ModemPreset: pb.Config_LoRaConfig_LONG_FAST,
				HasDefaultChannel: true, LatitudeI: 525000000, LongitudeI: -13000000, Altitude: 35, PositionPrecision: 14,
				NumOnlineLocalNodes: 5, HasOptedReportLocation: true,
			},
		},
		{
			name: "NeighborInfo with Neighbor entries",
			wire: msg(vint(1, 0x0badcafe), vint(2, 0x0badcafe), vint(3, 14400), sub(4, vint(1, 0xdeadbeef), f32(2, -4.25), fx32(3, 1754000007), vint(4, 900))),
			want: &pb.NeighborInfo{
				NodeId: 0x0badcafe, LastSentById: 0x0badcafe, NodeBroadcastIntervalSecs: 14400,
				Neighbors: []*pb.Neighbor{{NodeId: 0xdeadbeef, Snr: -4.25, LastRxTime: 1754000007, NodeBroadcastIntervalSecs: 900}},
			},
		},
		{
			name: "Waypoint: optional sfixed32 coordinates, fixed32 icon",
			wire: msg(vint(1, 77), sfx32(2, 1), sfx32(3, -1), vint(4, 1754100000), vint(5, 0x0badcafe), str(6, "camp"), str(7, "base camp"), fx32(8, 0x1F3D5)),
			want: &pb.Waypoint{
				Id: 77, LatitudeI: proto.Int32(1), LongitudeI: proto.Int32(-1), Expire: 1754100000, LockedTo: 0x0badcafe,
				Name: "camp", Description: "base camp", Icon: 0x1F3D5,
			},
		},
		{
			name: "Paxcount",
			wire: msg(vint(1, 12), vint(2, 34), vint(3, 5600)),
			want: &pb.Paxcount{Wifi: 12, Ble: 34, Uptime: 5600},
		},
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.want.ProtoReflect().New().Interface()
			if err := proto.Unmarshal(tc.wire, got); err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if hasUnknown(got.ProtoReflect()) {
				t.Errorf("decoding left unknown fields: a field number or wire type is wrong")
			}
			if !proto.Equal(got, tc.want) {
				t.Fatalf("decoded message differs\n got %v\nwant %v", got, tc.want)
			}
			out, err := proto.Marshal(tc.want)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			want := tc.wire
			if tc.goOrder != nil {
				want = tc.goOrder
				again := tc.want.ProtoReflect().New().Interface()
				if err := proto.Unmarshal(tc.goOrder, again); err != nil || !proto.Equal(again, tc.want) {
					t.Fatalf("goOrder fixture does not decode to the same message (err %v)", err)
				}
			}
			if !bytes.Equal(out, want) {
				t.Fatalf("encoding differs from the documented wire format\n got %s\nwant %s", hex.EncodeToString(out), hex.EncodeToString(want))
			}
		})
	}
}
