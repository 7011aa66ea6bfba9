package meshpb_test

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/jshiffer/lora-xmpp-bridge/meshpb"
)

// wantFields is a second, independent transcription of the Meshtastic field
// tables (SovereignRelay wire reference, sections 2.x; the rest checked
// against meshtastic/protobufs). Each line is "name number type [modifier]",
// where type is the scalar kind or the message/enum name relative to the
// package, and the modifier is "opt" (proto3 optional, explicit presence),
// "rep" (repeated) or "oneof". The test compares it with the compiled
// descriptor in both directions, so a typo in either shows up.
var wantFields = map[string]string{
	"ToRadio": `
		packet 1 MeshPacket oneof
		want_config_id 3 uint32 oneof
		disconnect 4 bool oneof
		mqttClientProxyMessage 6 MqttClientProxyMessage oneof
		heartbeat 7 Heartbeat oneof`,
	"FromRadio": `
		id 1 uint32
		packet 2 MeshPacket oneof
		my_info 3 MyNodeInfo oneof
		node_info 4 NodeInfo oneof
		config 5 Config oneof
		log_record 6 LogRecord oneof
		config_complete_id 7 uint32 oneof
		rebooted 8 bool oneof
		moduleConfig 9 ModuleConfig oneof
		channel 10 Channel oneof
		queueStatus 11 QueueStatus oneof
		metadata 13 DeviceMetadata oneof
		mqttClientProxyMessage 14 MqttClientProxyMessage oneof
		clientNotification 16 ClientNotification oneof`,
	"Heartbeat": `nonce 1 uint32`,
	"QueueStatus": `
		res 1 int32
		free 2 uint32
		maxlen 3 uint32
		mesh_packet_id 4 uint32`,
	"LogRecord": `
		message 1 string
		time 2 fixed32
		source 3 string
		level 4 LogRecord.Level`,
	"ClientNotification": `
		reply_id 1 uint32 opt
		time 2 fixed32
		level 3 LogRecord.Level
		message 4 string`,
	"MqttClientProxyMessage": `
		topic 1 string
		data 2 bytes oneof
		text 3 string oneof
		retained 4 bool`,
	"MeshPacket": `
		from 1 fixed32
		to 2 fixed32
		channel 3 uint32
		decoded 4 Data oneof
		encrypted 5 bytes oneof
		id 6 fixed32
		rx_time 7 fixed32 opt
		rx_snr 8 float
		hop_limit 9 uint32
		want_ack 10 bool
		priority 11 MeshPacket.Priority
		rx_rssi 12 int32 opt
		delayed 13 MeshPacket.Delayed
		via_mqtt 14 bool
		hop_start 15 uint32
		public_key 16 bytes
		pki_encrypted 17 bool
		next_hop 18 uint32
		relay_node 19 uint32
		tx_after 20 uint32
		transport_mechanism 21 MeshPacket.TransportMechanism
		xeddsa_signed 22 bool`,
	"Data": `
		portnum 1 PortNum
		payload 2 bytes
		want_response 3 bool
		dest 4 fixed32
		source 5 fixed32
		request_id 6 fixed32
		reply_id 7 fixed32
		emoji 8 fixed32
		bitfield 9 uint32 opt
		xeddsa_signature 10 bytes`,
	"Routing": `
		route_request 1 RouteDiscovery oneof
		route_reply 2 RouteDiscovery oneof
		error_reason 3 Routing.Error oneof`,
	"RouteDiscovery": `
		route 1 fixed32 rep
		snr_towards 2 int32 rep
		route_back 3 fixed32 rep
		snr_back 4 int32 rep`,
	"User": `
		id 1 string
		long_name 2 string
		short_name 3 string
		macaddr 4 bytes
		hw_model 5 HardwareModel
		is_licensed 6 bool
		role 7 Config.DeviceConfig.Role
		public_key 8 bytes
		is_unmessagable 9 bool opt`,
	"NodeInfo": `
		num 1 uint32
		user 2 User
		position 3 Position
		snr 4 float
		last_heard 5 fixed32
		device_metrics 6 DeviceMetrics
		channel 7 uint32
		via_mqtt 8 bool
		hops_away 9 uint32 opt
		is_favorite 10 bool
		is_ignored 11 bool
		is_key_manually_verified 12 bool
		is_muted 13 bool
		has_xeddsa_signed 14 bool`,
	"MyNodeInfo": `
		my_node_num 1 uint32
		reboot_count 8 uint32
		min_app_version 11 uint32
		device_id 12 bytes
		pio_env 13 string
		firmware_edition 14 FirmwareEdition
		nodedb_count 15 uint32`,
	"DeviceMetadata": `
		firmware_version 1 string
		device_state_version 2 uint32
		canShutdown 3 bool
		hasWifi 4 bool
		hasBluetooth 5 bool
		hasEthernet 6 bool
		role 7 Config.DeviceConfig.Role
		position_flags 8 uint32
		hw_model 9 HardwareModel
		hasRemoteHardware 10 bool
		hasPKC 11 bool
		excluded_modules 12 uint32
		has_xeddsa 14 bool`,
	"Position": `
		latitude_i 1 sfixed32 opt
		longitude_i 2 sfixed32 opt
		altitude 3 int32 opt
		time 4 fixed32
		location_source 5 Position.LocSource
		altitude_source 6 Position.AltSource
		timestamp 7 fixed32
		timestamp_millis_adjust 8 int32
		altitude_hae 9 sint32 opt
		altitude_geoidal_separation 10 sint32 opt
		PDOP 11 uint32
		HDOP 12 uint32
		VDOP 13 uint32
		gps_accuracy 14 uint32
		ground_speed 15 uint32 opt
		ground_track 16 uint32 opt
		fix_quality 17 uint32
		fix_type 18 uint32
		sats_in_view 19 uint32
		sensor_id 20 uint32
		next_update 21 uint32
		seq_number 22 uint32
		precision_bits 23 uint32`,
	"NeighborInfo": `
		node_id 1 uint32
		last_sent_by_id 2 uint32
		node_broadcast_interval_secs 3 uint32
		neighbors 4 Neighbor rep`,
	"Neighbor": `
		node_id 1 uint32
		snr 2 float
		last_rx_time 3 fixed32
		node_broadcast_interval_secs 4 uint32`,
	"Waypoint": `
		id 1 uint32
		latitude_i 2 sfixed32 opt
		longitude_i 3 sfixed32 opt
		expire 4 uint32
		locked_to 5 uint32
		name 6 string
		description 7 string
		icon 8 fixed32`,
	"Paxcount": `
		wifi 1 uint32
		ble 2 uint32
		uptime 3 uint32`,
	"Channel": `
		index 1 int32
		settings 2 ChannelSettings
		role 3 Channel.Role`,
	"ChannelSettings": `
		channel_num 1 uint32
		psk 2 bytes
		name 3 string
		id 4 fixed32
		uplink_enabled 5 bool
		downlink_enabled 6 bool
		module_settings 7 ModuleSettings`,
	"ModuleSettings": `
		position_precision 1 uint32
		is_muted 2 bool`,
	"Config": `
		device 1 Config.DeviceConfig oneof
		lora 6 Config.LoRaConfig oneof
		security 8 Config.SecurityConfig oneof`,
	"Config.DeviceConfig": `
		role 1 Config.DeviceConfig.Role
		serial_enabled 2 bool
		button_gpio 4 uint32
		buzzer_gpio 5 uint32
		rebroadcast_mode 6 Config.DeviceConfig.RebroadcastMode
		node_info_broadcast_secs 7 uint32
		double_tap_as_button_press 8 bool
		is_managed 9 bool
		disable_triple_click 10 bool
		tzdef 11 string
		led_heartbeat_disabled 12 bool
		buzzer_mode 13 Config.DeviceConfig.BuzzerMode`,
	"Config.LoRaConfig": `
		use_preset 1 bool
		modem_preset 2 Config.LoRaConfig.ModemPreset
		bandwidth 3 uint32
		spread_factor 4 uint32
		coding_rate 5 uint32
		frequency_offset 6 float
		region 7 Config.LoRaConfig.RegionCode
		hop_limit 8 uint32
		tx_enabled 9 bool
		tx_power 10 int32
		channel_num 11 uint32
		override_duty_cycle 12 bool
		sx126x_rx_boosted_gain 13 bool
		override_frequency 14 float
		pa_fan_disabled 15 bool
		ignore_incoming 103 uint32 rep
		ignore_mqtt 104 bool
		config_ok_to_mqtt 105 bool
		fem_lna_mode 106 Config.LoRaConfig.FEM_LNA_Mode
		serial_hal_only 107 bool`,
	"Config.SecurityConfig": `
		public_key 1 bytes
		private_key 2 bytes
		admin_key 3 bytes rep
		is_managed 4 bool
		serial_enabled 5 bool
		debug_log_api_enabled 6 bool
		admin_channel_enabled 8 bool`,
	"ModuleConfig": `
		mqtt 1 ModuleConfig.MQTTConfig oneof
		telemetry 6 ModuleConfig.TelemetryConfig oneof
		neighbor_info 10 ModuleConfig.NeighborInfoConfig oneof`,
	"ModuleConfig.MQTTConfig": `
		enabled 1 bool
		address 2 string
		username 3 string
		password 4 string
		encryption_enabled 5 bool
		json_enabled 6 bool
		tls_enabled 7 bool
		root 8 string
		proxy_to_client_enabled 9 bool
		map_reporting_enabled 10 bool
		map_report_settings 11 ModuleConfig.MapReportSettings`,
	"ModuleConfig.MapReportSettings": `
		publish_interval_secs 1 uint32
		position_precision 2 uint32
		should_report_location 3 bool`,
	"ModuleConfig.TelemetryConfig": `
		device_update_interval 1 uint32
		environment_update_interval 2 uint32
		environment_measurement_enabled 3 bool
		environment_screen_enabled 4 bool
		environment_display_fahrenheit 5 bool
		air_quality_enabled 6 bool
		air_quality_interval 7 uint32
		power_measurement_enabled 8 bool
		power_update_interval 9 uint32
		power_screen_enabled 10 bool
		health_measurement_enabled 11 bool
		health_update_interval 12 uint32
		health_screen_enabled 13 bool
		device_telemetry_enabled 14 bool
		air_quality_screen_enabled 15 bool`,
	"ModuleConfig.NeighborInfoConfig": `
		enabled 1 bool
		update_interval 2 uint32
		transmit_over_lora 3 bool`,
	"Telemetry": `
		time 1 fixed32
		device_metrics 2 DeviceMetrics oneof
		environment_metrics 3 EnvironmentMetrics oneof
		air_quality_metrics 4 AirQualityMetrics oneof
		power_metrics 5 PowerMetrics oneof
		local_stats 6 LocalStats oneof`,
	"DeviceMetrics": `
		battery_level 1 uint32 opt
		voltage 2 float opt
		channel_utilization 3 float opt
		air_util_tx 4 float opt
		uptime_seconds 5 uint32 opt`,
	"EnvironmentMetrics": `
		temperature 1 float opt
		relative_humidity 2 float opt
		barometric_pressure 3 float opt
		gas_resistance 4 float opt
		voltage 5 float opt
		current 6 float opt
		iaq 7 uint32 opt
		distance 8 float opt
		lux 9 float opt
		white_lux 10 float opt
		ir_lux 11 float opt
		uv_lux 12 float opt
		wind_direction 13 uint32 opt
		wind_speed 14 float opt
		weight 15 float opt
		wind_gust 16 float opt
		wind_lull 17 float opt
		radiation 18 float opt
		rainfall_1h 19 float opt
		rainfall_24h 20 float opt
		soil_moisture 21 uint32 opt
		soil_temperature 22 float opt`,
	"AirQualityMetrics": `
		pm10_standard 1 uint32 opt
		pm25_standard 2 uint32 opt
		pm100_standard 3 uint32 opt
		pm10_environmental 4 uint32 opt
		pm25_environmental 5 uint32 opt
		pm100_environmental 6 uint32 opt
		particles_03um 7 uint32 opt
		particles_05um 8 uint32 opt
		particles_10um 9 uint32 opt
		particles_25um 10 uint32 opt
		particles_50um 11 uint32 opt
		particles_100um 12 uint32 opt
		co2 13 uint32 opt
		co2_temperature 14 float opt
		co2_humidity 15 float opt
		form_formaldehyde 16 float opt
		form_humidity 17 float opt
		form_temperature 18 float opt`,
	"PowerMetrics": `
		ch1_voltage 1 float opt
		ch1_current 2 float opt
		ch2_voltage 3 float opt
		ch2_current 4 float opt
		ch3_voltage 5 float opt
		ch3_current 6 float opt`,
	"LocalStats": `
		uptime_seconds 1 uint32
		channel_utilization 2 float
		air_util_tx 3 float
		num_packets_tx 4 uint32
		num_packets_rx 5 uint32
		num_packets_rx_bad 6 uint32
		num_online_nodes 7 uint32
		num_total_nodes 8 uint32
		num_rx_dupe 9 uint32
		num_tx_relay 10 uint32
		num_tx_relay_canceled 11 uint32
		heap_total_bytes 12 uint32
		heap_free_bytes 13 uint32
		num_tx_dropped 14 uint32
		noise_floor 15 int32`,
	"ServiceEnvelope": `
		packet 1 MeshPacket
		channel_id 2 string
		gateway_id 3 string`,
	"MapReport": `
		long_name 1 string
		short_name 2 string
		role 3 Config.DeviceConfig.Role
		hw_model 4 HardwareModel
		firmware_version 5 string
		region 6 Config.LoRaConfig.RegionCode
		modem_preset 7 Config.LoRaConfig.ModemPreset
		has_default_channel 8 bool
		latitude_i 9 sfixed32
		longitude_i 10 sfixed32
		altitude 11 int32
		position_precision 12 uint32
		num_online_local_nodes 13 uint32
		has_opted_report_location 14 bool`,
}

// wantEnums lists enum values as "NAME=number" (same sources as wantFields).
// HardwareModel is deliberately partial: only values we verified are
// declared, the rest stay numeric (proto3 enums are open).
var wantEnums = map[string]string{
	"PortNum": `UNKNOWN_APP=0 TEXT_MESSAGE_APP=1 REMOTE_HARDWARE_APP=2 POSITION_APP=3
		NODEINFO_APP=4 ROUTING_APP=5 ADMIN_APP=6 TEXT_MESSAGE_COMPRESSED_APP=7 WAYPOINT_APP=8
		AUDIO_APP=9 DETECTION_SENSOR_APP=10 ALERT_APP=11 KEY_VERIFICATION_APP=12
		REMOTE_SHELL_APP=13 REPLY_APP=32 IP_TUNNEL_APP=33 PAXCOUNTER_APP=34
		STORE_FORWARD_PLUSPLUS_APP=35 NODE_STATUS_APP=36 MESH_BEACON_APP=37 SERIAL_APP=64
		STORE_FORWARD_APP=65 RANGE_TEST_APP=66 TELEMETRY_APP=67 ZPS_APP=68 SIMULATOR_APP=69
		TRACEROUTE_APP=70 NEIGHBORINFO_APP=71 ATAK_PLUGIN=72 MAP_REPORT_APP=73
		POWERSTRESS_APP=74 LORAWAN_BRIDGE=75 RETICULUM_TUNNEL_APP=76 CAYENNE_APP=77
		ATAK_PLUGIN_V2=78 LORA_OTA_APP=79 GROUPALARM_APP=112 PRIVATE_APP=256
		ATAK_FORWARDER=257 MAX=511`,
	"Routing.Error": `NONE=0 NO_ROUTE=1 GOT_NAK=2 TIMEOUT=3 NO_INTERFACE=4 MAX_RETRANSMIT=5
		NO_CHANNEL=6 TOO_LARGE=7 NO_RESPONSE=8 DUTY_CYCLE_LIMIT=9 BAD_REQUEST=32
		NOT_AUTHORIZED=33 PKI_FAILED=34 PKI_UNKNOWN_PUBKEY=35 ADMIN_BAD_SESSION_KEY=36
		ADMIN_PUBLIC_KEY_UNAUTHORIZED=37 RATE_LIMIT_EXCEEDED=38 PKI_SEND_FAIL_PUBLIC_KEY=39`,
	"MeshPacket.Priority": `UNSET=0 MIN=1 BACKGROUND=10 DEFAULT=64 RELIABLE=70 RESPONSE=80
		HIGH=100 ALERT=110 ACK=120 MAX=127`,
	"MeshPacket.Delayed": `NO_DELAY=0 DELAYED_BROADCAST=1 DELAYED_DIRECT=2`,
	"MeshPacket.TransportMechanism": `TRANSPORT_INTERNAL=0 TRANSPORT_LORA=1 TRANSPORT_LORA_ALT1=2
		TRANSPORT_LORA_ALT2=3 TRANSPORT_LORA_ALT3=4 TRANSPORT_MQTT=5 TRANSPORT_MULTICAST_UDP=6
		TRANSPORT_API=7 TRANSPORT_UNICAST_UDP=8`,
	"LogRecord.Level":    `UNSET=0 TRACE=5 DEBUG=10 INFO=20 WARNING=30 ERROR=40 CRITICAL=50`,
	"Position.LocSource": `LOC_UNSET=0 LOC_MANUAL=1 LOC_INTERNAL=2 LOC_EXTERNAL=3`,
	"Position.AltSource": `ALT_UNSET=0 ALT_MANUAL=1 ALT_INTERNAL=2 ALT_EXTERNAL=3 ALT_BAROMETRIC=4`,
	"Channel.Role":       `DISABLED=0 PRIMARY=1 SECONDARY=2`,
	"FirmwareEdition":    `VANILLA=0 SMART_CITIZEN=1 OPEN_SAUCE=16 DEFCON=17 BURNING_MAN=18 HAMVENTION=19 FAB=20 DRAGON_CON=21 CCC=22 DIY_EDITION=127`,
	"Config.DeviceConfig.Role": `CLIENT=0 CLIENT_MUTE=1 ROUTER=2 ROUTER_CLIENT=3 REPEATER=4 TRACKER=5
		SENSOR=6 TAK=7 CLIENT_HIDDEN=8 LOST_AND_FOUND=9 TAK_TRACKER=10 ROUTER_LATE=11 CLIENT_BASE=12`,
	"Config.DeviceConfig.RebroadcastMode": `ALL=0 ALL_SKIP_DECODING=1 LOCAL_ONLY=2 KNOWN_ONLY=3 NONE=4 CORE_PORTNUMS_ONLY=5`,
	"Config.DeviceConfig.BuzzerMode":      `ALL_ENABLED=0 DISABLED=1 NOTIFICATIONS_ONLY=2 SYSTEM_ONLY=3 DIRECT_MSG_ONLY=4`,
	"Config.LoRaConfig.RegionCode": `UNSET=0 US=1 EU_433=2 EU_868=3 CN=4 JP=5 ANZ=6 KR=7 TW=8 RU=9
		IN=10 NZ_865=11 TH=12 LORA_24=13 UA_433=14 UA_868=15 MY_433=16 MY_919=17 SG_923=18
		PH_433=19 PH_868=20 PH_915=21 ANZ_433=22 KZ_433=23 KZ_863=24 NP_865=25 BR_902=26
		ITU1_2M=27 ITU2_2M=28 EU_866=29 EU_874=30 EU_917=31 EU_N_868=32 ITU3_2M=33
		ITU1_70CM=34 ITU2_70CM=35 ITU3_70CM=36 ITU2_125CM=37`,
	"Config.LoRaConfig.ModemPreset": `LONG_FAST=0 LONG_SLOW=1 VERY_LONG_SLOW=2 MEDIUM_SLOW=3
		MEDIUM_FAST=4 SHORT_SLOW=5 SHORT_FAST=6 LONG_MODERATE=7 SHORT_TURBO=8 LONG_TURBO=9
		LITE_FAST=10 LITE_SLOW=11 NARROW_FAST=12 NARROW_SLOW=13 TINY_FAST=14 TINY_SLOW=15
		MEDIUM_TURBO=16`,
	"Config.LoRaConfig.FEM_LNA_Mode": `DISABLED=0 ENABLED=1 NOT_PRESENT=2`,
	"HardwareModel": `UNSET=0 TLORA_V2=1 TLORA_V1=2 TLORA_V2_1_1P6=3 TBEAM=4 HELTEC_V2_0=5
		TBEAM_V0P7=6 T_ECHO=7 TLORA_V1_1P3=8 RAK4631=9 HELTEC_V2_1=10 HELTEC_V1=11
		LILYGO_TBEAM_S3_CORE=12 RAK11200=13 NANO_G1=14 TLORA_V2_1_1P8=15 TLORA_T3_S3=16
		NANO_G1_EXPLORER=17 NANO_G2_ULTRA=18 STATION_G1=25 RAK11310=26 STATION_G2=31
		PORTDUINO=37 ANDROID_SIM=38 DIY_V1=39 M5STACK=42 HELTEC_V3=43 HELTEC_WSL_V3=44
		RPI_PICO=47 HELTEC_WIRELESS_TRACKER=48 HELTEC_WIRELESS_PAPER=49 T_DECK=50
		T_WATCH_S3=51 HELTEC_MESH_NODE_T114=69 SENSECAP_INDICATOR=70 TRACKER_T1000_E=71
		SEEED_XIAO_S3=81 XIAO_NRF52_KIT=88 HELTEC_V4=110 PRIVATE_HW=255`,
}

func fileDesc() protoreflect.FileDescriptor { return pb.File_meshpb_meshtastic_proto }

func relName(d protoreflect.Descriptor) string {
	pkg := string(fileDesc().Package()) + "."
	return strings.TrimPrefix(string(d.FullName()), pkg)
}

func describeField(fd protoreflect.FieldDescriptor) string {
	typ := fd.Kind().String()
	switch {
	case fd.Enum() != nil:
		typ = relName(fd.Enum())
	case fd.Message() != nil:
		typ = relName(fd.Message())
	}
	s := fmt.Sprintf("%s %d %s", fd.Name(), fd.Number(), typ)
	switch {
	case fd.IsList():
		s += " rep"
	case fd.HasOptionalKeyword():
		s += " opt"
	case fd.ContainingOneof() != nil:
		s += " oneof"
	}
	return s
}

func specLines(spec string, sep func(rune) bool) []string {
	var out []string
	for _, l := range strings.FieldsFunc(spec, sep) {
		if l = strings.Join(strings.Fields(l), " "); l != "" {
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return out
}

func diff(t *testing.T, what string, got, want []string) {
	t.Helper()
	g := map[string]bool{}
	for _, s := range got {
		g[s] = true
	}
	w := map[string]bool{}
	for _, s := range want {
		w[s] = true
		if !g[s] {
			t.Errorf("%s: missing or different in schema: %q", what, s)
		}
	}
	for _, s := range got {
		if !w[s] {
			t.Errorf("%s: not in the reference transcription: %q", what, s)
		}
	}
}

func allMessages(ms protoreflect.MessageDescriptors, f func(protoreflect.MessageDescriptor)) {
	for i := 0; i < ms.Len(); i++ {
		f(ms.Get(i))
		allMessages(ms.Get(i).Messages(), f)
	}
}

func allEnums(fd protoreflect.FileDescriptor, f func(protoreflect.EnumDescriptor)) {
	for i := 0; i < fd.Enums().Len(); i++ {
		f(fd.Enums().Get(i))
	}
	allMessages(fd.Messages(), func(md protoreflect.MessageDescriptor) {
		for i := 0; i < md.Enums().Len(); i++ {
			f(md.Enums().Get(i))
		}
	})
}

func TestSchemaMatchesReference(t *testing.T) {
	seen := map[string]bool{}
	allMessages(fileDesc().Messages(), func(md protoreflect.MessageDescriptor) {
		name := relName(md)
		seen[name] = true
		spec, ok := wantFields[name]
		if !ok {
			t.Errorf("message %s is not covered by the reference transcription", name)
			return
		}
		var got []string
		for i := 0; i < md.Fields().Len(); i++ {
			got = append(got, describeField(md.Fields().Get(i)))
		}
		sort.Strings(got)
		diff(t, name, got, specLines(spec, func(r rune) bool { return r == '\n' }))
	})
	for name := range wantFields {
		if !seen[name] {
			t.Errorf("message %s is missing from the schema", name)
		}
	}
}

func TestEnumsMatchReference(t *testing.T) {
	seen := map[string]bool{}
	allEnums(fileDesc(), func(ed protoreflect.EnumDescriptor) {
		name := relName(ed)
		seen[name] = true
		spec, ok := wantEnums[name]
		if !ok {
			t.Errorf("enum %s is not covered by the reference transcription", name)
			return
		}
		var got []string
		for i := 0; i < ed.Values().Len(); i++ {
			v := ed.Values().Get(i)
			got = append(got, fmt.Sprintf("%s=%d", v.Name(), v.Number()))
		}
		sort.Strings(got)
		diff(t, name, got, specLines(spec, func(r rune) bool { return r == ' ' || r == '\n' || r == '\t' }))
	})
	for name := range wantEnums {
		if !seen[name] {
			t.Errorf("enum %s is missing from the schema", name)
		}
	}
}
