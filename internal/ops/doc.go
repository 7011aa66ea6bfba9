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
// _total; ages and durations are in seconds. The bridge's metrics are:
//
//	name                          kind     labels                           help
//	radio_frames_in_total         counter                                   Frames read from the radio link.
//	radio_frames_out_total        counter                                   Packets handed to the radio for transmission.
//	radio_frames_dropped_total    counter  reason=rejected|oversize|        Frames or packets discarded, by reason.
//	                                       send_failed|downlink_rejected|
//	                                       queue_full
//	radio_packets_in_total        counter                                   Mesh packets decoded from the radio.
//	radio_packets_published_total counter                                   Mesh packets published to the broker.
//	radio_log_lines_total         counter                                   Debug log lines the radio printed on the link.
//	handshakes_total              counter  side=radio                       Completed configuration handshakes with the radio.
//	reconnects_total              counter  side=radio|xmpp                  Times a link was lost and re-established.
//	spool_depth                   gauge    side=radio|xmpp                  Messages waiting to be sent.
//	spool_oldest_age_seconds      gauge    side=radio|xmpp                  Age of the oldest waiting message; 0 when empty.
//	airtime_used_seconds          gauge                                     Transmit airtime used in the current duty-cycle window.
//	airtime_budget_seconds        gauge                                     Transmit airtime allowed per duty-cycle window.
//	naks_total                    counter  reason=<routing error>           Negative acknowledgements from the mesh, by
//	                                                                        Routing_Error name in lower case (no_route, timeout, ...).
//	muc_messages_total            counter  direction=mesh_to_room|          Messages bridged between the mesh and the rooms.
//	                                       room_to_mesh
//	muc_chunks_to_mesh_total      counter                                   Mesh packets that room messages were split into.
//	muc_refused_total             counter                                   Room messages refused (too long, radio down, NAKed).
//	dedupe_hits_total             counter  source=mesh|room                 Duplicates dropped: packets heard again over other
//	                                                                        paths, and the rooms' reflections of our own messages.
//	link_up                       gauge    side=radio|xmpp|mqtt             1 while the link is up, 0 otherwise.
//
// Register what exists with [Metrics.Counter] and [Metrics.Gauge], passing
// the atomic counters' Load methods, or with [Metrics.Family] when the
// label values are only known at run time (NAKs by reason). The registry
// also carries the standard go_* and process_* collectors.
package ops
