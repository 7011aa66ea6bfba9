package xmppgw

// SetMaxTLS caps the TLS version of c's connections, for tests that need
// what a server offers only under an older version.
func SetMaxTLS(c *Config, version uint16) { c.maxTLS = version }
