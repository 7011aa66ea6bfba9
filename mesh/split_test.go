package mesh

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/rivo/uniseg"
)

// textProps is what the checks need to know about a text: its grapheme
// cluster boundaries and line-break opportunities, as byte offsets.
type textProps struct {
	clusterAt map[int]int // cluster start offset -> cluster length
	bound     map[int]bool
	canBreak  map[int]bool
	clusters  []int // cluster start offsets, ascending
}

func propsOf(text string) textProps {
	p := textProps{clusterAt: map[int]int{}, bound: map[int]bool{0: true}, canBreak: map[int]bool{}}
	state, off := -1, 0
	for rest := text; rest != ""; {
		var c string
		var b int
		c, rest, b, state = uniseg.StepString(rest, state)
		p.clusterAt[off] = len(c)
		p.clusters = append(p.clusters, off)
		off += len(c)
		p.bound[off] = true
		if b&uniseg.MaskLine != uniseg.LineDontBreak {
			p.canBreak[off] = true
		}
	}
	return p
}

// clusterAround returns the start and length of the cluster holding offset
// off.
func (p textProps) clusterAround(off int) (int, int) {
	start := 0
	for _, s := range p.clusters {
		if s > off {
			break
		}
		start = s
	}
	return start, p.clusterAt[start]
}

// runAfter returns the word after the line-break opportunity at off: the
// text from the first non-whitespace cluster at or after off to the next
// opportunity, without its trailing whitespace clusters.
func (p textProps) runAfter(text string, off int) string {
	start, end := -1, -1
	for _, s := range p.clusters {
		if s < off {
			continue
		}
		if s > off && start >= 0 && p.canBreak[s] {
			break
		}
		if c := text[s : s+p.clusterAt[s]]; !isBlank(c) {
			if start < 0 {
				start = s
			}
			end = s + len(c)
		} else if start >= 0 && p.canBreak[s+len(c)] {
			break
		}
	}
	if start < 0 {
		return ""
	}
	return text[start:end]
}

func isBlank(s string) bool { return strings.TrimFunc(s, unicode.IsSpace) == "" }

// checkChunks checks everything Chunks promises about chunks, the result of
// Chunks(author, text, maxBytes), and returns the bodies.
//
//   - each chunk is valid UTF-8, at most maxBytes, and carries the prefix
//     "author: " (alone) or "author (i/n): " (several), with the single form
//     used exactly when the trimmed text fits;
//   - the sanitized text is exactly ws0 body1 ws1 body2 ... bodyN wsN, with
//     every ws made only of whitespace (so the bodies rejoin to the text
//     with nothing but the whitespace at the cuts removed), and no body
//     starts or ends with a whitespace cluster;
//   - every cut is on a grapheme-cluster boundary of the original text,
//     unless the cluster around it alone is larger than the room of a body;
//   - every cut is at a line-break opportunity unless the chunk had none.
func checkChunks(t testing.TB, author, text string, maxBytes int, chunks []string) []string {
	t.Helper()
	author = strings.ToValidUTF8(author, "\uFFFD")
	text = strings.ToValidUTF8(text, "\uFFFD")
	if len(chunks) == 0 {
		if !isBlank(text) {
			t.Fatalf("no chunks for non-blank text %q", text)
		}
		return nil
	}
	n := len(chunks)
	room := maxBytes - len(fmt.Sprintf("%s (%d/%d): ", author, n, n))
	if n == 1 {
		room = maxBytes - len(author+": ")
	}
	bodies := make([]string, n)
	for i, c := range chunks {
		if len(c) > maxBytes {
			t.Fatalf("chunk %d is %d bytes > %d: %q", i, len(c), maxBytes, c)
		}
		if !utf8.ValidString(c) {
			t.Fatalf("chunk %d not valid UTF-8: %q", i, c)
		}
		prefix := author + ": "
		if n > 1 {
			prefix = fmt.Sprintf("%s (%d/%d): ", author, i+1, n)
		}
		body, ok := strings.CutPrefix(c, prefix)
		if !ok {
			t.Fatalf("chunk %d %q lacks prefix %q", i, c, prefix)
		}
		if body == "" {
			t.Fatalf("chunk %d has an empty body", i)
		}
		bodies[i] = body
	}
	p := propsOf(text)
	// The text without its leading and trailing whitespace clusters.
	first, last := len(text), 0
	for _, s := range p.clusters {
		if c := text[s : s+p.clusterAt[s]]; !isBlank(c) {
			first, last = min(first, s), s+len(c)
		}
	}
	if fitsWhole := len(author)+2+last-first <= maxBytes; fitsWhole != (n == 1) {
		t.Fatalf("%d chunks, but the whole text fitting is %v", n, fitsWhole)
	}

	pos := 0
	starts := make([]int, n)
	for i, body := range bodies {
		for !strings.HasPrefix(text[pos:], body) {
			r, size := utf8.DecodeRuneInString(text[pos:])
			if size == 0 || !unicode.IsSpace(r) {
				t.Fatalf("body %d %q not found at offset %d of %q (after bodies %q)", i, body, pos, text, bodies[:i])
			}
			pos += size
		}
		starts[i] = pos
		pos += len(body)
	}
	if !isBlank(text[pos:]) {
		t.Fatalf("text after the last body is not blank: %q", text[pos:])
	}
	for i, body := range bodies {
		start, end := starts[i], starts[i]+len(body)
		for _, off := range []int{start, end} {
			if !p.bound[off] {
				cs, cl := p.clusterAround(off)
				if cl <= room {
					t.Fatalf("body %d cut at %d inside the cluster %q (%d bytes, room %d)", i, off, text[cs:cs+cl], cl, room)
				}
			}
		}
		// A body starts and ends with whitespace only inside a cluster that
		// is not whitespace and lies whole in the body.
		if r, size := utf8.DecodeRuneInString(body); unicode.IsSpace(r) {
			cs, cl := p.clusterAround(start)
			if cs != start || cs+cl > end || isBlank(text[cs:cs+cl]) {
				t.Fatalf("body %d %q starts with whitespace (%d bytes)", i, body, size)
			}
		}
		if r, size := utf8.DecodeLastRuneInString(body); unicode.IsSpace(r) {
			cs, cl := p.clusterAround(end - size)
			if cs < start || cs+cl != end || isBlank(text[cs:cs+cl]) {
				t.Fatalf("body %d %q ends with whitespace", i, body)
			}
		}
		if i == n-1 {
			continue
		}
		next := starts[i+1]
		atBreak := false
		for off := end; off <= next; off++ {
			atBreak = atBreak || p.canBreak[off]
		}
		if !atBreak {
			// Then the chunk has no line-break opportunity, or the word
			// after its last one is longer than a body's room.
			last := -1
			for off := start + 1; off < end; off++ {
				if p.canBreak[off] {
					last = off
				}
			}
			if last >= 0 {
				if run := p.runAfter(text, last); len(run) <= room {
					t.Fatalf("body %d %q cut at %d, not at a line break, though it could at %d before %q (room %d)", i, body, end, last, run, room)
				}
			}
		}
	}
	return bodies
}

// mixedText builds a text of exactly size bytes mixing ASCII words, emoji
// and CJK without spaces.
func mixedText(size int) string {
	parts := []string{
		"Hello mesh, the family 👨‍👩‍👧‍👦 says hi from Kyiv 🇺🇦🇺🇦 with a thumbs up 👍🏽.",
		"日本語のテキストはスペースなしで続きます日本語のテキストはスペースなしで続きます。",
		"Plain words follow, then a flag pair 🇯🇵🇩🇪 and more text.",
	}
	var b strings.Builder
	for i := 0; ; i++ {
		next := parts[i%len(parts)] + " "
		if b.Len()+len(next) > size {
			break
		}
		b.WriteString(next)
	}
	for b.Len() < size {
		b.WriteByte('x')
	}
	return b.String()
}

func words(size int) string {
	var b strings.Builder
	for i := 0; b.Len() < size; i++ {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "word%d", i)
	}
	return b.String()[:size]
}

func TestChunks(t *testing.T) {
	const max = 200
	tests := []struct {
		name   string
		author string
		text   string
		max    int
		want   []string // nil: only the generic checks, and wantN
		wantN  int      // expected number of chunks, if want is nil; -1: any
	}{
		{name: "short ascii", author: "nick", text: "hello mesh", max: max, want: []string{"nick: hello mesh"}},
		{name: "trimmed", author: "nick", text: " \t hello  mesh \r\n", max: max, want: []string{"nick: hello  mesh"}},
		{name: "inner newlines kept", author: "nick", text: "line one\nline two\n\n  indented", max: max,
			want: []string{"nick: line one\nline two\n\n  indented"}},
		{name: "invalid utf-8 replaced", author: "ni\xffck", text: "caf\xe9 ok", max: max, want: []string{"ni\uFFFDck: caf\uFFFD ok"}},
		{name: "exactly fits", author: "nick", text: words(max - len("nick: ")), max: max, wantN: 1},
		{name: "one byte over", author: "nick", text: words(max - len("nick: ") + 1), max: max, wantN: 2},
		{name: "600 bytes mixed", author: "nick", text: mixedText(600), max: max, wantN: 4},
		{name: "cjk only", author: "nick", text: strings.Repeat("日本語のテキスト", 30), max: max, wantN: 4},
		{name: "numbering width", author: "nick", text: words(2000), max: max, wantN: 11},
		{name: "three digit numbering", author: "n", text: words(3000), max: 30, wantN: -1},
		{name: "emoji only", author: "nick", text: strings.Repeat("👨‍👩‍👧‍👦", 40), max: max, wantN: 6},
		{name: "combining marks", author: "nick", text: "x" + strings.Repeat("\u0301", 300) + " tail", max: max, wantN: 4},
		{name: "cut at a newline", author: "nick", text: words(150) + " \r\n\n" + strings.Repeat("z", 100), max: max,
			want: []string{"nick (1/2): " + words(150), "nick (2/2): " + strings.Repeat("z", 100)}},
		{name: "long author short text", author: strings.Repeat("a", 190), text: "hi", max: max, wantN: 1},
		{name: "empty author", author: "", text: words(300), max: max, wantN: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Chunks(tc.author, tc.text, tc.max)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want != nil {
				if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tc.want) {
					t.Fatalf("got %q, want %q", got, tc.want)
				}
			} else if tc.wantN >= 0 && len(got) != tc.wantN {
				t.Fatalf("got %d chunks, want %d: %q", len(got), tc.wantN, got)
			}
			checkChunks(t, tc.author, tc.text, tc.max, got)
		})
	}
}

func TestChunksFormat(t *testing.T) {
	got, err := Chunks("nick", words(2000), 200)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range map[int]string{0: "nick (1/11): word0 word1 ", 9: "nick (10/11): ", 10: "nick (11/11): "} {
		if !strings.HasPrefix(got[i], want) {
			t.Errorf("chunk %d = %q, want prefix %q", i, got[i], want)
		}
	}
	// The room is the same for every chunk, that of the widest prefix, so
	// the chunks with a one-digit index are a byte short of 200.
	if len(got[0]) > 199 || len(got[9]) > 200 {
		t.Errorf("chunk lengths %d and %d", len(got[0]), len(got[9]))
	}
}

// TestChunksDigitGrowth splits texts around the 9 -> 10 chunk transition:
// the second digit of n shrinks every body by two bytes, which can push the
// count further.
func TestChunksDigitGrowth(t *testing.T) {
	seen := map[int]bool{}
	for size := 1500; size <= 2000; size++ {
		text := words(size)
		got, err := Chunks("nick", text, 200)
		if err != nil {
			t.Fatal(err)
		}
		seen[len(got)] = true
		checkChunks(t, "nick", text, 200, got)
	}
	if !seen[9] || !seen[10] {
		t.Fatalf("chunk counts seen: %v", seen)
	}
}

func TestChunksLongWord(t *testing.T) {
	const max = 200
	host := "https://example.com/"
	url := host + strings.Repeat("AbCdEfGhIj0123456789", 24) // 500 bytes
	got, err := Chunks("nick", url, max)
	if err != nil {
		t.Fatal(err)
	}
	bodies := checkChunks(t, "nick", url, max, got)
	room := max - len("nick (3/3): ")
	// The URL's last line-break opportunity is after the host's slash, but
	// the rest is longer than a chunk and has to be cut anyway, so the
	// chunks are filled up to the room.
	if len(url) != 500 || len(bodies) != 3 || len(bodies[0]) != room || len(bodies[1]) != room {
		t.Fatalf("%d bytes in chunks %q", len(url), got)
	}

	// A long word after a short one starts in the same chunk.
	text := "see " + url + " ok"
	got, err = Chunks("nick", text, max)
	if err != nil {
		t.Fatal(err)
	}
	bodies = checkChunks(t, "nick", text, max, got)
	if len(bodies) != 3 || !strings.HasPrefix(bodies[0], "see https://example.com/AbC") || len(bodies[0]) != room || !strings.HasSuffix(bodies[2], "789 ok") {
		t.Fatalf("bodies %q", bodies)
	}
	// A word that fits a chunk of its own is not cut.
	text = "see " + url[:190] + " ok"
	got, err = Chunks("nick", text, max)
	if err != nil {
		t.Fatal(err)
	}
	bodies = checkChunks(t, "nick", text, max, got)
	if len(bodies) != 2 || bodies[0] != "see https://example.com/" || bodies[1] != url[20:190]+" ok" {
		t.Fatalf("bodies %q", bodies)
	}

	// Decomposed é: clusters of three bytes are never cut.
	text = strings.Repeat("e\u0301", 250)
	got, err = Chunks("nick", text, max)
	if err != nil {
		t.Fatal(err)
	}
	bodies = checkChunks(t, "nick", text, max, got)
	for _, b := range bodies[:len(bodies)-1] {
		if len(b) != room/3*3 {
			t.Fatalf("body of %d bytes, want %d", len(b), room/3*3)
		}
	}
}

// TestChunksHugeCluster covers the fallback for a cluster larger than the
// room: it is cut between runes, every chunk within maxBytes.
func TestChunksHugeCluster(t *testing.T) {
	text := "a" + strings.Repeat("\u0301", 300)
	got, err := Chunks("nick", text, 200)
	if err != nil {
		t.Fatal(err)
	}
	bodies := checkChunks(t, "nick", text, 200, got)
	if strings.Join(bodies, "") != text {
		t.Fatalf("bodies do not rejoin: %q", bodies)
	}
	// A 4-byte rune per body is the least room allowed.
	text = strings.Repeat("👍🏽", 4)
	got, err = Chunks("", text, len(" (9/9): ")+utf8.UTFMax)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 8 {
		t.Fatalf("%q", got)
	}
	checkChunks(t, "", text, len(" (9/9): ")+utf8.UTFMax, got)
}

func TestChunksBlank(t *testing.T) {
	for _, text := range []string{"", " ", " \t\r\n ", "\u3000\u00a0", "\r\n\r\n"} {
		got, err := Chunks("nick", text, 200)
		if err != nil || got != nil {
			t.Errorf("Chunks(%q) = %q, %v; want nil, nil", text, got, err)
		}
	}
}

func TestChunksErrors(t *testing.T) {
	long := words(500)
	for _, tc := range []struct {
		author string
		max    int
		want   error
	}{
		{strings.Repeat("a", 190), 200, ErrAuthorTooLong},
		{strings.Repeat("a", 300), 200, ErrAuthorTooLong},
		{"nick", 14, ErrAuthorTooLong},
		{"", 10, ErrMaxBytesTooSmall},
		{"nick", 0, ErrMaxBytesTooSmall},
		{"nick", -5, ErrMaxBytesTooSmall},
	} {
		got, err := Chunks(tc.author, long, tc.max)
		if !errors.Is(err, tc.want) || got != nil {
			t.Errorf("Chunks(%d-byte author, max %d) = %q, %v; want %v", len(tc.author), tc.max, got, err, tc.want)
		}
	}
	// Many chunks need two-digit numbers, which no longer leave room for a
	// rune: the text cannot be sent.
	if _, err := Chunks("", words(200), len(" (1/1): ")+utf8.UTFMax); !errors.Is(err, ErrMaxBytesTooSmall) {
		t.Errorf("got %v, want ErrMaxBytesTooSmall", err)
	}
}

func FuzzSplit(f *testing.F) {
	f.Add("nick", "hello mesh")
	f.Add("Ålice", mixedText(600))
	f.Add("bob", strings.Repeat("日本語のテキスト", 30))
	f.Add("🦊", "a"+strings.Repeat("\u0301", 300)+" b\r\n c")
	f.Add("x", "https://example.com/"+strings.Repeat("AbCdEfGhIj", 50))
	f.Add("", " 👨‍👩‍👧‍👦🇺🇦🇺🇦👍🏽 \u00a0 \u200d\u0301 x\xff\xfe")
	f.Fuzz(func(t *testing.T, author, text string) {
		if len(author) > 40 || !utf8.ValidString(author) {
			t.Skip()
		}
		// Texts need not be valid UTF-8: invalid bytes become U+FFFD, and
		// checkChunks compares against the replaced text.
		got, err := Chunks(author, text, 200)
		if err != nil {
			t.Fatalf("Chunks: %v", err)
		}
		checkChunks(t, author, text, 200, got)

		// A small size, to reach the fallbacks and many chunks with short
		// fuzz inputs. Errors are allowed here, but only the documented ones.
		small := len(author) + len(" (1/1): ") + utf8.UTFMax + len(text)%16
		got, err = Chunks(author, text, small)
		if err != nil {
			if !errors.Is(err, ErrAuthorTooLong) && !errors.Is(err, ErrMaxBytesTooSmall) || got != nil {
				t.Fatalf("Chunks(max %d): %q, %v", small, got, err)
			}
			return
		}
		checkChunks(t, author, text, small, got)
	})
}
