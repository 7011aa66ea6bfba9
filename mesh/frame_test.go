package mesh

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func frame(t testing.TB, payload []byte) []byte {
	t.Helper()
	b, err := AppendFrame(nil, payload)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// readAll drains a FrameReader, rendering frames as "F:<hex>" and log lines as "L:<text>".
func readAll(t testing.TB, fr *FrameReader) []string {
	t.Helper()
	var got []string
	for {
		it, err := fr.Next()
		if errors.Is(err, io.EOF) {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		if it.Log != "" {
			got = append(got, "L:"+it.Log)
		} else {
			got = append(got, "F:"+string(it.Frame))
		}
	}
}

// noZero is a validator that refuses payloads containing a zero byte, a
// stand-in for "does not decode as a protobuf".
func noZero(p []byte) bool { return !bytes.Contains(p, []byte{0}) }

func TestFrameReader(t *testing.T) {
	big := bytes.Repeat([]byte("x"), MaxFrame)
	oversize := []byte{0x94, 0xC3, 0x02, 0x01} // announces 513 bytes
	tests := []struct {
		name  string
		in    []byte
		valid func([]byte) bool
		want  []string
	}{
		{"one frame", frame(t, []byte("abc")), nil, []string{"F:abc"}},
		{"empty frame", frame(t, nil), nil, []string{"F:"}},
		{"max frame", frame(t, big), nil, []string{"F:" + string(big)}},
		{"log then frame", cat([]byte("INFO boot\r\n"), frame(t, []byte("p"))), nil, []string{"L:INFO boot", "F:p"}},
		{"frame then unterminated log", cat(frame(t, []byte("p")), []byte("tail")), nil, []string{"F:p", "L:tail"}},
		{"lone start bytes are log text", []byte{'a', 0x94, 'b', '\n'}, nil, []string{"L:a\x94b"}},
		{"garbage between frames", cat(frame(t, []byte("1")), []byte{0xC3, 0xC3, 0x00, 0xff}, frame(t, []byte("2"))), nil,
			[]string{"F:1", "F:2", "L:\xc3\xc3\x00\xff"}},
		{"oversize header skipped, following frame found", cat(oversize, frame(t, []byte("ok"))), nil,
			[]string{"F:ok", "L:\x94\xc3\x02\x01"}},
		// A torn frame announces 6 bytes but the radio only wrote 2 before a
		// new frame started; the validator refuses the swallowed bytes and
		// the inner frame is still found.
		{"frame inside a torn frame", cat([]byte{0x94, 0xC3, 0x00, 0x06, 0x00, 0x00}, frame(t, []byte("in"))), noZero,
			[]string{"F:in", "L:\x94\xc3\x00\x06\x00\x00"}},
		{"truncated frame at EOF", []byte{0x94, 0xC3, 0x00, 0x05, 'a'}, nil, nil},
		{"long noise is cut into bounded lines", bytes.Repeat([]byte("n"), maxLogLine+3), nil,
			[]string{"L:" + strings.Repeat("n", maxLogLine), "L:nnn"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := readAll(t, NewFrameReader(bytes.NewReader(tt.in), tt.valid))
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestFrameReaderStats(t *testing.T) {
	in := cat([]byte("log\n"), []byte{0x94, 0xC3, 0xff, 0xff}, []byte{0x94, 0xC3, 0x00, 0x01, 0x00}, frame(t, []byte("ok")))
	fr := NewFrameReader(bytes.NewReader(in), noZero)
	readAll(t, fr)
	st := fr.Stats()
	if st.Frames != 1 || st.Oversize != 1 || st.Rejected != 1 || st.LogLines != 2 {
		t.Errorf("stats = %+v", st)
	}
}

func TestAppendFrame(t *testing.T) {
	got := frame(t, []byte{1, 2, 3})
	if want := []byte{0x94, 0xC3, 0x00, 0x03, 1, 2, 3}; !bytes.Equal(got, want) {
		t.Errorf("AppendFrame = % x, want % x", got, want)
	}
	if _, err := AppendFrame(nil, make([]byte, MaxFrame+1)); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("oversize payload: err = %v", err)
	}
	if len(WakeBytes) != 32 || bytes.Count(WakeBytes, []byte{0xC3}) != 32 {
		t.Errorf("WakeBytes = % x", WakeBytes)
	}
}

// FuzzFrameReader feeds arbitrary noise around two known frames. Whatever the
// noise, the reader must not panic, never hand out more than MaxFrame bytes,
// and still deliver both frames when the noise holds no frame start.
func FuzzFrameReader(f *testing.F) {
	f.Add([]byte("INFO | boot\r\n"), []byte{})
	f.Add([]byte{0x94, 0xC3, 0x02, 0x01}, []byte{0x94})
	f.Add([]byte{0x94, 0xC3, 0x00, 0x10, 0x00}, []byte{0xC3, 0x94, 0x94})
	f.Fuzz(func(t *testing.T, noise1, noise2 []byte) {
		want1, want2 := []byte("first\x01"), []byte("second\x01")
		in := cat(noise1, frame(t, want1), noise2, frame(t, want2))
		fr := NewFrameReader(bytes.NewReader(in), func(p []byte) bool { return bytes.HasSuffix(p, []byte{0x01}) })
		var frames [][]byte
		for {
			it, err := fr.Next()
			if err != nil {
				break
			}
			if len(it.Frame) > MaxFrame {
				t.Fatalf("frame of %d bytes", len(it.Frame))
			}
			if it.Log == "" {
				frames = append(frames, append([]byte(nil), it.Frame...))
			}
		}
		if bytes.IndexByte(noise1, 0x94) >= 0 || bytes.IndexByte(noise2, 0x94) >= 0 {
			return // noise that starts frames may legitimately swallow ours
		}
		if len(frames) != 2 || !bytes.Equal(frames[0], want1) || !bytes.Equal(frames[1], want2) {
			t.Fatalf("frames = %q", frames)
		}
	})
}

// A torn header whose length swallows the next frame must not hold that
// frame back until more bytes arrive: the reader resyncs on the frame it
// already has instead of blocking for the rest of the torn one.
func TestFrameReaderTornHeaderDoesNotStall(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write(cat([]byte{0x94, 0xC3, 0x01, 0xF4}, frame(t, []byte("real\x01"))))
	fr := NewFrameReader(pr, func(p []byte) bool { return bytes.HasSuffix(p, []byte{0x01}) })
	got := make(chan Item, 1)
	go func() {
		it, _ := fr.Next()
		got <- it
	}()
	select {
	case it := <-got:
		if string(it.Frame) != "real\x01" {
			t.Errorf("got %q", it.Frame)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the frame after a torn header was held back while the stream was idle")
	}
	if fr.Stats().Rejected != 1 {
		t.Errorf("stats %+v", fr.Stats())
	}
}
