// Package mesh holds the pure logic of the Meshtastic side: stream framing,
// node ids, channel keys and encryption, the firmware's JSON forms, text
// splitting and airtime. It does no I/O of its own beyond the io.Reader it is
// handed, starts no goroutines and does not log.
package mesh

import (
	"bufio"
	"errors"
	"io"
)

// Stream API framing constants (firmware StreamAPI).
const (
	frameStart1 = 0x94
	frameStart2 = 0xC3
	headerLen   = 4
	// MaxFrame is the largest payload a frame may announce (MAX_TO_FROM_RADIO_SIZE).
	MaxFrame = 512
	// maxLogLine bounds one line of the radio's text log, so that binary
	// noise without newlines cannot grow a line without limit.
	maxLogLine = 512
)

// WakeBytes are written before the first frame: START2 repeated, which makes
// a radio that was left half-way through parsing a frame resync.
var WakeBytes = func() []byte {
	b := make([]byte, 32)
	for i := range b {
		b[i] = frameStart2
	}
	return b
}()

// ErrFrameTooLarge is returned by AppendFrame for payloads over MaxFrame.
var ErrFrameTooLarge = errors.New("frame payload larger than 512 bytes")

// AppendFrame appends the framed payload to dst.
func AppendFrame(dst, payload []byte) ([]byte, error) {
	if len(payload) > MaxFrame {
		return dst, ErrFrameTooLarge
	}
	dst = append(dst, frameStart1, frameStart2, byte(len(payload)>>8), byte(len(payload)))
	return append(dst, payload...), nil
}

// FrameStats counts what a FrameReader has seen.
type FrameStats struct {
	Frames   uint64 // frames handed out and accepted
	Rejected uint64 // frames the validator refused (torn or corrupt)
	Oversize uint64 // headers announcing more than MaxFrame bytes
	LogLines uint64 // lines of plain text between frames
}

// Item is one thing read from the stream: a frame payload or a line of log text.
type Item struct {
	// Frame is the payload of a frame. It is only valid until the next call
	// to Next.
	Frame []byte
	// Log is a line of text that arrived outside frames (the radio's debug
	// console), without its line ending.
	Log string
}

// FrameReader splits a radio byte stream into frames and log text. It
// resyncs byte by byte: a header that announces an impossible length, or a
// payload that Valid refuses, costs only its first byte, and scanning
// resumes right after it, so a frame hidden inside a torn one is still found.
type FrameReader struct {
	src *bufio.Reader
	// Valid, if set, decides whether a payload is a real frame (for example
	// by decoding it). A refused payload is rescanned as stream bytes.
	Valid func([]byte) bool

	pending []byte // bytes read but not yet consumed
	line    []byte // partial log line
	stats   FrameStats
}

// NewFrameReader reads frames from r.
func NewFrameReader(r io.Reader, valid func([]byte) bool) *FrameReader {
	return &FrameReader{src: bufio.NewReaderSize(r, 4096), Valid: valid}
}

// Stats returns the counters so far.
func (fr *FrameReader) Stats() FrameStats { return fr.stats }

// Next returns the next frame or log line. It returns the source's error
// (io.EOF included) once the source fails; a partial log line is returned
// before that error.
func (fr *FrameReader) Next() (Item, error) {
	for {
		if len(fr.pending) == 0 {
			b, err := fr.src.ReadByte()
			if err != nil {
				if len(fr.line) > 0 {
					return fr.flushLine(), nil
				}
				return Item{}, err
			}
			fr.pending = append(fr.pending, b)
		}
		if fr.pending[0] != frameStart1 {
			if item, ok := fr.logByte(fr.pending[0]); ok {
				fr.pending = fr.pending[1:]
				return item, nil
			}
			fr.pending = fr.pending[1:]
			continue
		}
		if err := fr.fill(2); err != nil {
			return fr.endOfStream(err)
		}
		if fr.pending[1] != frameStart2 {
			fr.skipStart()
			continue
		}
		if err := fr.fill(headerLen); err != nil {
			return fr.endOfStream(err)
		}
		n := int(fr.pending[2])<<8 | int(fr.pending[3])
		if n > MaxFrame {
			fr.stats.Oversize++
			fr.skipStart()
			continue
		}
		resynced, err := fr.fillPayload(headerLen + n)
		if err != nil {
			return fr.endOfStream(err)
		}
		if resynced {
			continue
		}
		payload := fr.pending[headerLen : headerLen+n]
		if fr.Valid != nil && !fr.Valid(payload) {
			fr.stats.Rejected++
			fr.skipStart()
			continue
		}
		fr.stats.Frames++
		fr.pending = fr.pending[headerLen+n:]
		return Item{Frame: payload}, nil
	}
}

// skipStart treats the leading START1 byte as stream noise (kept with the
// log text, where it can be seen) and rescans what follows.
func (fr *FrameReader) skipStart() {
	fr.line = append(fr.line, fr.pending[0])
	fr.pending = fr.pending[1:]
}

// fill makes sure at least n bytes are pending.
func (fr *FrameReader) fill(n int) error {
	for len(fr.pending) < n {
		b, err := fr.src.ReadByte()
		if err != nil {
			return err
		}
		fr.pending = append(fr.pending, b)
	}
	return nil
}

// fillPayload reads until n bytes are pending, like fill. But before it
// blocks for more input it checks whether the bytes it already holds contain
// a complete, valid frame after the current header: then the current header
// was torn (its length is a lie that swallowed the next frame), and waiting
// for the rest of it would hold the real frame back until unrelated traffic
// arrives. In that case the torn header is dropped and resynced is true.
func (fr *FrameReader) fillPayload(n int) (resynced bool, err error) {
	for len(fr.pending) < n {
		if fr.src.Buffered() == 0 && fr.resyncEmbedded() {
			return true, nil
		}
		b, err := fr.src.ReadByte()
		if err != nil {
			return false, err
		}
		fr.pending = append(fr.pending, b)
	}
	return false, nil
}

// resyncEmbedded looks for a complete frame that Valid accepts inside the
// pending bytes after the leading header, and drops what comes before it.
func (fr *FrameReader) resyncEmbedded() bool {
	if fr.Valid == nil {
		return false
	}
	p := fr.pending
	for k := 1; k+headerLen <= len(p); k++ {
		if p[k] != frameStart1 || p[k+1] != frameStart2 {
			continue
		}
		m := int(p[k+2])<<8 | int(p[k+3])
		if m > MaxFrame || k+headerLen+m > len(p) || !fr.Valid(p[k+headerLen:k+headerLen+m]) {
			continue
		}
		fr.stats.Rejected++
		fr.line = append(fr.line, p[:k]...)
		fr.pending = p[k:]
		return true
	}
	return false
}

// endOfStream reports what is left when the source fails mid-frame: the
// partial frame is dropped, a partial log line is still delivered.
func (fr *FrameReader) endOfStream(err error) (Item, error) {
	fr.pending = fr.pending[:0]
	if len(fr.line) > 0 {
		return fr.flushLine(), nil
	}
	return Item{}, err
}

// logByte adds b to the current log line and reports a finished line.
func (fr *FrameReader) logByte(b byte) (Item, bool) {
	switch b {
	case '\r':
		return Item{}, false
	case '\n':
		if len(fr.line) == 0 {
			return Item{}, false
		}
		return fr.flushLine(), true
	}
	fr.line = append(fr.line, b)
	if len(fr.line) >= maxLogLine {
		return fr.flushLine(), true
	}
	return Item{}, false
}

func (fr *FrameReader) flushLine() Item {
	fr.stats.LogLines++
	s := string(fr.line)
	fr.line = fr.line[:0]
	return Item{Log: s}
}
