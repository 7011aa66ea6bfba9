package mesh

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"
)

// DefaultKey is the well-known key behind the one-byte PSK 0x01 ("AQ==").
var DefaultKey = [16]byte{0xd4, 0xf1, 0xbb, 0x3a, 0x20, 0x29, 0x07, 0x59, 0xf0, 0xbc, 0xff, 0xab, 0xcf, 0x4e, 0x69, 0x01}

// ExpandPSK turns a channel's psk setting into its AES key, following the
// firmware's rules: empty or {0} means no encryption (nil key); one byte n
// means the default key with n-1 added to its last byte; other short keys
// are zero-padded to 16 or 32 bytes.
func ExpandPSK(psk []byte) ([]byte, error) {
	switch {
	case len(psk) == 0:
		return nil, nil
	case len(psk) == 1:
		if psk[0] == 0 {
			return nil, nil
		}
		k := DefaultKey
		k[15] += psk[0] - 1
		return k[:], nil
	case len(psk) <= 16:
		k := make([]byte, 16)
		copy(k, psk)
		return k, nil
	case len(psk) <= 32:
		k := make([]byte, 32)
		copy(k, psk)
		return k, nil
	}
	return nil, fmt.Errorf("psk of %d bytes: at most 32", len(psk))
}

// ChannelHash is the one-byte channel number carried by encrypted packets:
// the XOR of the channel name's bytes with the XOR of the key's bytes.
func ChannelHash(name string, key []byte) uint8 {
	var h uint8
	for i := 0; i < len(name); i++ {
		h ^= name[i]
	}
	for _, b := range key {
		h ^= b
	}
	return h
}

// Crypt encrypts or decrypts (the same XOR) a packet payload with AES-CTR,
// as the firmware does for channel traffic. The initial counter block is the
// packet id as a 64-bit little-endian integer, then the sender's node number
// as 32-bit little-endian, then a zero block counter.
func Crypt(key []byte, from, id uint32, in []byte) ([]byte, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("channel key: %w", err)
	}
	var iv [aes.BlockSize]byte
	binary.LittleEndian.PutUint64(iv[0:8], uint64(id))
	binary.LittleEndian.PutUint32(iv[8:12], from)
	out := make([]byte, len(in))
	cipher.NewCTR(block, iv[:]).XORKeyStream(out, in)
	return out, nil
}
