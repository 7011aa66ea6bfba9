// Package secret holds values, such as passwords, that must never show in
// logs, formatted errors or marshalled configuration.
package secret

import (
	"fmt"
	"io"
	"log/slog"
)

const redacted = "[redacted]"

// String is a secret string. Formatting it with any fmt verb, logging it
// with slog and marshalling it (text or JSON) all give "[redacted]"; only
// Reveal gives the value, to the code that must use it. As a flag.Value it
// can be set from the command line.
//
// Being a string underneath, it is still printed in clear where fmt cannot
// call its methods: in an unexported struct field, or with %p.
type String string

func (String) String() string                { return redacted }
func (String) GoString() string              { return redacted }
func (String) LogValue() slog.Value          { return slog.StringValue(redacted) }
func (String) MarshalText() ([]byte, error)  { return []byte(redacted), nil }
func (s *String) Set(v string) error         { *s = String(v); return nil }
func (s String) Reveal() string              { return string(s) }
func (String) Format(f fmt.State, verb rune) { _, _ = io.WriteString(f, redacted) }
