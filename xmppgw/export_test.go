package xmppgw

// SetMaxTLS caps the TLS version of c's connections, for tests that need
// what a server offers only under an older version.
func SetMaxTLS(c *Config, version uint16) { c.maxTLS = version }

// KnowsPacket reports whether g has learnt which message went to (or came
// from) the mesh as packet id: the radio side reports a packet id after
// the radio took it, a moment after the radio has it.
func (g *Gateway) KnowsPacket(id uint32) bool {
	_, ok := g.rel.byPacket(id)
	return ok
}
