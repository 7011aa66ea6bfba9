package mesh

import (
	"errors"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/rivo/uniseg"
)

// Errors returned by Chunks when the text cannot be sent without truncation.
var (
	// ErrAuthorTooLong: the numbered prefix with the author leaves less
	// than utf8.UTFMax bytes for a body, but would not with an empty author.
	ErrAuthorTooLong = errors.New("author too long for the mesh text size")
	// ErrMaxBytesTooSmall: maxBytes leaves less than utf8.UTFMax bytes for
	// a body even with an empty author.
	ErrMaxBytesTooSmall = errors.New("mesh text size too small")
)

// Chunks splits text by author into mesh texts of at most maxBytes bytes
// each, every one prefixed with the author and, when there is more than one,
// numbered: "nick: text" for one chunk; "nick (1/3): ...", "nick (2/3): ...",
// ... for several. It cuts on word boundaries where it can, else on
// grapheme-cluster boundaries (never inside a multi-byte rune, an emoji ZWJ
// sequence, a flag, or a letter with combining marks), so every chunk is
// valid UTF-8 and rejoining the chunk bodies gives back the text, modulo the
// whitespace at the cut points.
//
// The exact rules:
//
//   - author and text are first made valid UTF-8: each run of invalid bytes
//     becomes one U+FFFD. The author is used as is otherwise (not trimmed).
//   - Whitespace means a grapheme cluster made only of runes for which
//     unicode.IsSpace holds (so "\r\n" is whitespace, but a space carrying a
//     combining mark is not). Whitespace at the start and end of the text and
//     at every cut is dropped; whitespace inside a chunk, newlines included,
//     is kept. An empty or whitespace-only text gives no chunks and no error.
//   - If "author: text" fits in maxBytes it is the only chunk. Otherwise the
//     chunks are "author (i/n): body" with i from 1 to n and no padding of i;
//     the room for a body is computed for the widest prefix, the one with
//     i = n, so every body gets the same room. As the width of n depends on
//     n, the text is split assuming n has d digits, starting with d = 1, and
//     split again with d+1 while the count needs more digits.
//   - Cuts go at the last line-break opportunity (UAX #14, via uniseg) that
//     keeps the body within its room, which is after a space or hyphen in
//     most scripts and between ideographs in CJK text. With none, the cut is
//     at the last grapheme-cluster boundary that fits (UAX #29). A word
//     (the text between two line-break opportunities) longer than the room
//     of a whole chunk is not moved to a chunk of its own, as it has to be
//     cut anyway: it starts right after the text before it, and is cut on
//     grapheme-cluster boundaries where each chunk's room ends. Splitting is
//     greedy: each chunk takes as much as fits.
//   - A single grapheme cluster longer than the room (say a letter with
//     hundreds of combining marks) is the one exception: it is cut between
//     runes, never inside one, as it cannot be sent whole. Whitespace runes
//     at such a cut (as in a space carrying an emoji modifier) are dropped
//     like whitespace at any other cut.
//   - Every body has room for at least utf8.UTFMax bytes, so that any rune
//     fits. When the numbered layout leaves less than that the text cannot
//     be sent, and Chunks returns ErrAuthorTooLong, or ErrMaxBytesTooSmall if
//     even an empty author would not leave enough. A text that fits whole in
//     one chunk is sent however little room is left.
func Chunks(author, text string, maxBytes int) ([]string, error) {
	author = strings.ToValidUTF8(author, "\uFFFD")
	text = strings.ToValidUTF8(text, "\uFFFD")
	segs := segmentText(text)
	first, last := -1, -1
	for i, s := range segs {
		if !s.space {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	if first < 0 {
		return nil, nil
	}
	if whole := text[segs.start(first):segs[last].end]; len(author)+len(": ")+len(whole) <= maxBytes {
		return []string{author + ": " + whole}, nil
	}
	for digits := 1; ; digits++ {
		// " (" + i + "/" + n + "): " with i and n of digits digits each.
		fixed := len(" (/): ") + 2*digits
		room := maxBytes - len(author) - fixed
		if room < utf8.UTFMax {
			if maxBytes-fixed >= utf8.UTFMax {
				return nil, ErrAuthorTooLong
			}
			return nil, ErrMaxBytesTooSmall
		}
		bodies := splitBodies(text, segs, room)
		n := strconv.Itoa(len(bodies))
		if len(n) > digits {
			continue
		}
		out := make([]string, len(bodies))
		for i, b := range bodies {
			out[i] = author + " (" + strconv.Itoa(i+1) + "/" + n + "): " + b
		}
		return out, nil
	}
}

// chunkSeg is one grapheme cluster of the text being split.
type chunkSeg struct {
	end   int  // byte offset just past the cluster
	space bool // the cluster is whitespace only
	brk   bool // a line may (or must) be broken after the cluster
}

type chunkSegs []chunkSeg

// start is the byte offset of cluster i.
func (s chunkSegs) start(i int) int {
	if i == 0 {
		return 0
	}
	return s[i-1].end
}

// spaceRunes returns the length of the whitespace runes s starts with.
func spaceRunes(s string) int {
	return len(s) - len(strings.TrimLeftFunc(s, unicode.IsSpace))
}

// longRun reports whether the text from cluster i on, whitespace at its
// start skipped, runs for more than room bytes before the next line-break
// opportunity: a word that will have to be cut anyway.
func (s chunkSegs) longRun(i, room int) bool {
	for i < len(s) && s[i].space {
		i++
	}
	if i == len(s) {
		return false
	}
	start := s.start(i)
	for ; i < len(s); i++ {
		if s[i].space {
			if s[i].brk {
				return false
			}
			continue
		}
		if s[i].end-start > room {
			return true
		}
		if s[i].brk {
			return false
		}
	}
	return false
}

// segmentText cuts text into grapheme clusters with their line-break
// opportunities.
func segmentText(text string) chunkSegs {
	var out chunkSegs
	state := -1
	end := 0
	for rest := text; rest != ""; {
		var cluster string
		var b int
		cluster, rest, b, state = uniseg.StepString(rest, state)
		end += len(cluster)
		out = append(out, chunkSeg{
			end:   end,
			space: strings.TrimFunc(cluster, unicode.IsSpace) == "",
			brk:   b&uniseg.MaskLine != uniseg.LineDontBreak,
		})
	}
	return out
}

// splitBodies cuts text, segmented as segs, into bodies of at most room bytes,
// room being at least utf8.UTFMax. Whitespace at the cuts and at both ends
// of the text is dropped. See Chunks for where it cuts.
func splitBodies(text string, segs chunkSegs, room int) []string {
	var bodies []string
	pos, i := 0, 0 // pos is in cluster i, at its start unless a cluster was cut
	for {
		for i < len(segs) && segs[i].space && segs.start(i) == pos {
			pos = segs[i].end
			i++
		}
		if i == len(segs) {
			return bodies
		}
		limit := pos + room
		fit := -1 // last non-space cluster that fits
		cut := -1 // last cluster that fits and may end a line, spaces after it aside
		j := i
		for ; j < len(segs); j++ {
			s := segs[j]
			if s.space {
				// Trailing whitespace costs nothing: it is dropped at a cut.
				if s.brk && fit >= 0 {
					cut = fit
				}
				continue
			}
			if s.end > limit {
				break
			}
			fit = j
			if s.brk {
				cut = j
			}
		}
		var end int
		switch {
		case j == len(segs):
			// The rest of the text fits; its last cluster is not whitespace
			// or the loop above would have been left with i == len(segs).
			end, i = segs[fit].end, fit+1
		case cut >= 0 && !segs.longRun(cut+1, room):
			end, i = segs[cut].end, cut+1
		case fit >= 0:
			end, i = segs[fit].end, fit+1
		default:
			// Cluster i alone is longer than room: cut it between runes,
			// dropping the whitespace runes at the cut. It is not
			// whitespace (j stopped on it), so a rune other than whitespace
			// is left, and room >= utf8.UTFMax lets at least one through.
			start := pos + spaceRunes(text[pos:segs[i].end])
			if segs[i].end-start <= room {
				pos = start // the rest of the cluster now fits
				continue
			}
			end = start
			for end < segs[i].end {
				_, size := utf8.DecodeRuneInString(text[end:])
				if end+size > start+room {
					break
				}
				end += size
			}
			bodies = append(bodies, strings.TrimRightFunc(text[start:end], unicode.IsSpace))
			pos = end + spaceRunes(text[end:segs[i].end])
			if pos == segs[i].end {
				i++
			}
			continue
		}
		bodies = append(bodies, text[pos:end])
		pos = end
	}
}
