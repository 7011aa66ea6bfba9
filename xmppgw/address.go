package xmppgw

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/jshiffer/lora-xmpp-bridge/mesh"
)

// A direct message from XMPP to a mesh node starts with the node's address:
//
//	@ANA see you at 6              its short name
//	@Kofi on my way                its long name
//	@"Ana's T-Beam" hi             a long name with spaces, in quotes
//	@Ana's T-Beam hi               ... or without, when no other name fits
//	@!a1b2c3d4 hi                  its node id
//
// Names are matched without regard to case; a colon or comma right after
// the address ("@ANA: hi") is not part of the text. The parser only reads
// what was written (parseAddress); which node that is depends on the
// nodes the bridge knows (resolveAddress).

// Errors of parseAddress, worded for the person who wrote the message.
var (
	errNoAddress   = errors.New("the message does not start with @ and a node's name")
	errNoName      = errors.New("nothing follows the @: write a node's name right after it, as in @ANA hello")
	errBadNodeID   = errors.New("a node id is ! and 8 hex digits, as in @!a1b2c3d4")
	errOpenQuote   = errors.New("the quoted name has no closing quote")
	errNothingSaid = errors.New("there is no message after the name")
)

// address is the addressee of a direct message, as written.
type address struct {
	id     uint32 // by node id; 0 when by name
	name   string // the quoted name, or the first word after the @
	quoted bool
	// after is everything after the @, for a long name with spaces
	// written without quotes.
	after string
	// text is the message after the address (for a name without quotes:
	// after the first word; resolveAddress may take more as the name).
	text string
}

// openQuotes pairs each opening quote a keyboard may produce with its
// closing one: phones turn " into typographic quotes.
var openQuotes = map[rune]rune{'"': '"', '“': '”', '„': '“', '«': '»', '”': '”'}

// parseAddress reads the address at the start of a direct message.
func parseAddress(body string) (address, error) {
	body = strings.TrimSpace(body)
	after, ok := strings.CutPrefix(body, "@")
	if !ok {
		return address{}, errNoAddress
	}
	a := address{after: after}
	first, size := utf8.DecodeRuneInString(after)
	switch {
	case after == "" || unicode.IsSpace(first):
		return address{}, errNoName
	case first == '!':
		word, rest := cutWord(after)
		id, err := mesh.ParseNodeID(trimPunct(word))
		// !ffffffff is everyone (broadcast), and 0 no one: not a node.
		if err != nil || len(trimPunct(word)) != 9 || id == mesh.Broadcast || id == 0 {
			return address{}, errBadNodeID
		}
		a.id, a.name, a.text = id, mesh.NodeID(id), messageText(rest)
	case openQuotes[first] != 0:
		end := strings.IndexRune(after[size:], openQuotes[first])
		if end < 0 {
			return address{}, errOpenQuote
		}
		a.name = strings.TrimSpace(after[size : size+end])
		a.quoted = true
		a.text = messageText(after[size+end+utf8.RuneLen(openQuotes[first]):])
		if a.name == "" {
			return address{}, errNoName
		}
	default:
		word, rest := cutWord(after)
		a.name, a.text = trimPunct(word), messageText(rest)
		if a.name == "" {
			return address{}, errNoName
		}
	}
	return a, nil
}

// cutWord splits s at its first white space.
func cutWord(s string) (word, rest string) {
	i := strings.IndexFunc(s, unicode.IsSpace)
	if i < 0 {
		return s, ""
	}
	return s[:i], s[i:]
}

// trimPunct drops the colon or comma people put after a name.
func trimPunct(word string) string { return strings.TrimRight(word, ":,") }

// messageText is what follows an address: without the separator and the
// space around it.
func messageText(s string) string {
	s = strings.TrimLeftFunc(s, unicode.IsSpace)
	s = strings.TrimLeft(s, ":,")
	return strings.TrimSpace(s)
}

// nodeName is a node the bridge may address, as its node record names it.
type nodeName struct {
	num         uint32
	short, long string
}

// label names a node for people: its short and long names and its id.
func (n nodeName) label() string {
	id := mesh.NodeID(n.num)
	switch {
	case n.short != "" && n.long != "":
		return n.short + " (" + n.long + ", " + id + ")"
	case n.long != "":
		return n.long + " (" + id + ")"
	case n.short != "":
		return n.short + " (" + id + ")"
	}
	return id
}

// shortLabel names a node briefly: its short name, else its long name,
// else its id.
func (n nodeName) shortLabel() string { return cmp.Or(n.short, n.long, mesh.NodeID(n.num)) }

// maxCandidates bounds the nodes an answer suggests.
const maxCandidates = 5

// resolution is the node an address names, or why there is none.
type resolution struct {
	to   nodeName
	text string // the message, after the address
	ok   bool
	// ambiguous: several nodes have the name; candidates are those (else
	// nodes with similar names), at most maxCandidates.
	ambiguous  bool
	candidates []nodeName
}

// resolveAddress finds the node an address names among nodes. A node id
// always resolves, known or not: the mesh may know it.
func resolveAddress(a address, nodes []nodeName) resolution {
	if a.id != 0 {
		for _, n := range nodes {
			if n.num == a.id {
				return resolution{to: n, text: a.text, ok: true}
			}
		}
		return resolution{to: nodeName{num: a.id}, text: a.text, ok: true}
	}
	// The longest name that fits wins: "@Kofi Home hi" is for "Kofi Home"
	// even when there is a "Kofi" too.
	var best []nodeName
	bestLen, text := 0, ""
	consider := func(n nodeName, consumed int, rest string) {
		switch {
		case consumed > bestLen:
			best, bestLen, text = []nodeName{n}, consumed, rest
		case consumed == bestLen && !slices.ContainsFunc(best, func(b nodeName) bool { return b.num == n.num }):
			best = append(best, n)
		}
	}
	for _, n := range nodes {
		if strings.EqualFold(a.name, n.short) || strings.EqualFold(a.name, n.long) {
			consider(n, len(a.name), a.text)
		}
		if !a.quoted && strings.ContainsFunc(n.long, unicode.IsSpace) {
			if rest, ok := cutNamePrefix(a.after, n.long); ok {
				consider(n, len(n.long), messageText(rest))
			}
		}
	}
	switch {
	case len(best) == 1:
		return resolution{to: best[0], text: text, ok: true}
	case len(best) > 1:
		return resolution{ambiguous: true, candidates: sortNames(best)}
	}
	// Unknown: suggest the names that contain what was written, or that
	// it contains.
	var like []nodeName
	for _, n := range nodes {
		if containsFold(n.short, a.name) || containsFold(n.long, a.name) || containsFold(a.name, n.short) {
			like = append(like, n)
		}
	}
	return resolution{candidates: sortNames(like)}
}

// cutNamePrefix reports whether s starts with name (ignoring case) followed
// by the end, white space or a separator, and returns what follows.
func cutNamePrefix(s, name string) (string, bool) {
	if len(s) < len(name) || !strings.EqualFold(s[:len(name)], name) {
		return "", false
	}
	rest := s[len(name):]
	r, _ := utf8.DecodeRuneInString(rest)
	if rest != "" && !unicode.IsSpace(r) && r != ':' && r != ',' {
		return "", false
	}
	return rest, true
}

func containsFold(s, sub string) bool {
	return s != "" && sub != "" && strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}

// sortNames orders suggestions by short name and keeps the first few.
func sortNames(ns []nodeName) []nodeName {
	slices.SortFunc(ns, func(a, b nodeName) int {
		return cmp.Or(strings.Compare(strings.ToLower(a.shortLabel()), strings.ToLower(b.shortLabel())), cmp.Compare(a.num, b.num))
	})
	return ns[:min(len(ns), maxCandidates)]
}

// addressHelp is the answer to a message the bridge cannot address.
func addressHelp(err error, candidates []nodeName, name string, ambiguous bool) string {
	var sb strings.Builder
	switch {
	case ambiguous:
		fmt.Fprintf(&sb, "Not sent: “%s” names more than one node. Write one of:", name)
		for _, c := range candidates {
			fmt.Fprintf(&sb, "\n• @%s — %s", addressOf(c), c.label())
		}
		return sb.String()
	case err != nil:
		fmt.Fprintf(&sb, "Not sent: %v.", err)
	default:
		fmt.Fprintf(&sb, "Not sent: the bridge knows no node called “%s”.", name)
		if len(candidates) > 0 {
			sb.WriteString(" Did you mean:")
			for _, c := range candidates {
				fmt.Fprintf(&sb, "\n• @%s — %s", addressOf(c), c.label())
			}
			return sb.String()
		}
	}
	sb.WriteString("\nStart a direct message with the node's short name, long name or id: @ANA see you at 6, @\"Ana's T-Beam\" hi, @!a1b2c3d4 hi. !nodes lists the nodes heard recently.")
	return sb.String()
}

// addressOf is the shortest way to write a node's address unambiguously
// enough to suggest: its id, which always works.
func addressOf(n nodeName) string { return mesh.NodeID(n.num) }
