package mesh

import (
	"fmt"
	"strconv"
	"strings"
)

// Broadcast is the destination of a packet for everyone on a channel.
const Broadcast uint32 = 0xFFFFFFFF

// NodeID formats a node number the way the firmware does: "!" and eight
// lowercase hex digits.
func NodeID(num uint32) string {
	return fmt.Sprintf("!%08x", num)
}

// ParseNodeID parses "!a1b2c3d4" (the "!" is optional) into a node number.
func ParseNodeID(s string) (uint32, error) {
	h := strings.TrimPrefix(s, "!")
	if len(h) == 0 || len(h) > 8 {
		return 0, fmt.Errorf("node id %q: want ! and up to 8 hex digits", s)
	}
	n, err := strconv.ParseUint(h, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("node id %q: want ! and up to 8 hex digits", s)
	}
	return uint32(n), nil
}
