package mesh

import (
	"bytes"
	"crypto/aes"
	"encoding/base64"
	"testing"
)

func TestExpandPSK(t *testing.T) {
	def, _ := base64.StdEncoding.DecodeString("1PG7OiApB1nwvP+rz05pAQ==")
	def2 := append([]byte(nil), def...)
	def2[15]++
	tests := []struct {
		name string
		psk  []byte
		want []byte
	}{
		{"empty: no encryption", nil, nil},
		{"zero: no encryption", []byte{0}, nil},
		{"AQ== is the default key", []byte{1}, def},
		{"2 is the default key plus one", []byte{2}, def2},
		{"short key zero-padded to 16", []byte{9, 8, 7}, append([]byte{9, 8, 7}, make([]byte, 13)...)},
		{"17 bytes padded to 32", bytes.Repeat([]byte{5}, 17), append(bytes.Repeat([]byte{5}, 17), make([]byte, 15)...)},
		{"32 bytes as is", bytes.Repeat([]byte{6}, 32), bytes.Repeat([]byte{6}, 32)},
	}
	for _, tt := range tests {
		got, err := ExpandPSK(tt.psk)
		if err != nil || !bytes.Equal(got, tt.want) {
			t.Errorf("%s: ExpandPSK(% x) = % x, %v; want % x", tt.name, tt.psk, got, err, tt.want)
		}
	}
	if _, err := ExpandPSK(make([]byte, 33)); err == nil {
		t.Error("33-byte psk accepted")
	}
}

// Channel hashes with the default key, as the wire reference lists them.
func TestChannelHash(t *testing.T) {
	key, _ := ExpandPSK([]byte{1})
	for name, want := range map[string]uint8{
		"LongFast": 8, "MediumFast": 31, "ShortFast": 112, "LongSlow": 15, "MediumSlow": 24, "LongMod": 110, "ShortTurbo": 14,
	} {
		if got := ChannelHash(name, key); got != want {
			t.Errorf("ChannelHash(%q, default) = %d, want %d", name, got, want)
		}
	}
}

// refCTR is an independent rendering of the firmware's counter mode from
// its documented layout: block i is AES(key, id LE64 | from LE32 | i BE32),
// XORed into the text.
func refCTR(key []byte, from, id uint32, in []byte) []byte {
	block, _ := aes.NewCipher(key)
	out := make([]byte, len(in))
	var ctr, ks [16]byte
	for i := 0; i*16 < len(in); i++ {
		for b := 0; b < 8; b++ {
			ctr[b] = byte(uint64(id) >> (8 * b))
		}
		for b := 0; b < 4; b++ {
			ctr[8+b] = byte(from >> (8 * b))
			ctr[15-b] = byte(uint32(i) >> (8 * b))
		}
		block.Encrypt(ks[:], ctr[:])
		for j := 0; j < 16 && i*16+j < len(in); j++ {
			out[i*16+j] = in[i*16+j] ^ ks[j]
		}
	}
	return out
}

func TestCrypt(t *testing.T) {
	key128, _ := ExpandPSK([]byte{1})
	key256 := bytes.Repeat([]byte{0x42}, 32)
	plain := []byte("\x08\x01\x12\x2bHello from the ridge, this is more than one AES block long")
	for _, key := range [][]byte{key128, key256} {
		ct, err := Crypt(key, 0xa1b2c3d4, 0x12345678, plain)
		if err != nil {
			t.Fatal(err)
		}
		if want := refCTR(key, 0xa1b2c3d4, 0x12345678, plain); !bytes.Equal(ct, want) {
			t.Errorf("key %d bytes: ciphertext differs from the reference counter mode", len(key))
		}
		back, _ := Crypt(key, 0xa1b2c3d4, 0x12345678, ct)
		if !bytes.Equal(back, plain) {
			t.Errorf("key %d bytes: decrypt(encrypt(x)) != x", len(key))
		}
	}
	if _, err := Crypt([]byte{1, 2, 3}, 1, 1, plain); err == nil {
		t.Error("3-byte key accepted")
	}
}

func TestNodeID(t *testing.T) {
	if got := NodeID(0xa1b2c3d4); got != "!a1b2c3d4" {
		t.Errorf("NodeID = %q", got)
	}
	if got := NodeID(1); got != "!00000001" {
		t.Errorf("NodeID(1) = %q", got)
	}
	for in, want := range map[string]uint32{"!a1b2c3d4": 0xa1b2c3d4, "A1B2C3D4": 0xa1b2c3d4, "!1": 1, "!ffffffff": Broadcast} {
		if got, err := ParseNodeID(in); err != nil || got != want {
			t.Errorf("ParseNodeID(%q) = %x, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "!", "!123456789", "!xyz", "!-1"} {
		if _, err := ParseNodeID(bad); err == nil {
			t.Errorf("ParseNodeID(%q) accepted", bad)
		}
	}
}
