// Package ops is what the bridge offers whoever operates it: systemd
// readiness and watchdog notifications ([Notifier]), Prometheus metrics read
// from the gateways' existing counters ([Metrics]), and an HTTP endpoint
// serving them with a health check ([Server]).
//
// Nothing here touches global state: the metrics live in a private registry,
// and the notifier only reads the environment systemd sets.
//
// # Metric names
//
// Every name is prefixed with [Namespace] and an underscore. Counters end in
// _total; ages and durations are in seconds. The bridge's metrics are
// (label values in angle brackets are filled in at run time; a test checks
// this table against what the daemon registers):
//
//	name                          kind     labels                            help
//	radio_frames_in_total         counter                                    Frames read from the radio.
//	radio_frames_dropped_total    counter  reason=undecodable|oversize       Frames dropped, by reason.
//	radio_log_lines_total         counter                                    Lines of console text from the radio.
//	handshakes_total              counter                                    Configuration handshakes with the radio.
//	mesh_packets_in_total         counter                                    Packets heard by the radio.
//	mesh_packets_out_total        counter                                    Packets the radio accepted for sending.
//	mesh_send_failures_total      counter                                    Send requests refused or NAKed.
//	mesh_naks_total               counter  reason=<routing error name>       Sends refused, by reason (radio, mesh or bridge).
//	mqtt_downlink_rejected_total  counter                                    Downlink messages refused.
//	dedupe_hits_total             counter  side=mesh                         Packets dropped as already seen.
//	reconnects_total              counter  side=radio|xmpp                   Times a link was lost.
//	up                            gauge    side=radio|xmpp                   Whether a side is connected (1) or not (0).
//	queue_depth                   gauge    side=radio                        Messages waiting to be sent.
//	spool_depth                   gauge    queue=radio|to-mesh|room:<room JID> Messages waiting on disk for the other side.
//	spool_oldest_age_seconds      gauge    queue=radio|to-mesh|room:<room JID> Age of the oldest message waiting on disk.
//	airtime_used_seconds          gauge                                      Airtime bridged packets used in the window.
//	airtime_budget_seconds        gauge                                      Airtime bridged packets may use in the window.
//	airtime_blocked               gauge                                      Whether packets for the mesh wait for airtime (1) or not (0).
//	airtime_wait_seconds          gauge                                      Seconds until the packet held back for airtime may go.
//	mqtt_proxy_dropped_total      counter  reason=oversize|queue_full        Client proxy messages not passed to the radio, by reason.
//	muc_messages_in_total         counter                                    Room messages sent on to the mesh.
//	muc_messages_out_total        counter                                    Mesh texts posted to rooms.
//	muc_refused_total             counter                                    Room messages the mesh did not take.
//
// Register what exists with [Metrics.Counter] and [Metrics.Gauge], passing
// the atomic counters' Load methods, or with [Metrics.Family] when the
// label values are only known at run time (NAKs by reason). The registry
// also carries the standard go_* and process_* collectors.
package ops
