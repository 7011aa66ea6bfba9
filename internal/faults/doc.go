// Package faults is the bridge's fault-injection suite. It has no code of
// its own: its tests assemble the real radio link (serialgw), the embedded
// MQTT broker, the durable spool and the simulated radio (meshsim) over real
// pseudo-terminals, and then break things the way the field does: a USB
// radio unplugged and plugged back again and again, a room flooding the
// mesh, the same packet from several relays and replayed after a handshake
// or a restart, a spool on a full disk. Each test asserts exact counts of
// what was delivered, refused and published.
//
// Time scales are shrunk through configuration (texts spaced tens of
// milliseconds apart instead of seconds, airtime windows of seconds instead
// of an hour); the rules are the same. The full-disk test mounts a tmpfs and
// so needs root; without it the test is skipped, unless the CI environment
// variable is set, in which case it fails.
package faults
