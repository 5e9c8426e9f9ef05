// Package shacrypt is crypt(3)'s SHA-256 and SHA-512 methods ("$5$" and
// "$6$", Ulrich Drepper's SHA-crypt), which Ironic uses to hash a node's
// rescue password ([conductor]rescue_password_hash_algorithm: sha256 by
// default in 21.4, or sha512) before it sends it to the agent: the agent
// writes the hash for the rescue user as it is.
package shacrypt

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
)

// Rounds limits and the default, as in glibc.
const (
	DefaultRounds = 5000
	minRounds     = 1000
	maxRounds     = 999999999
	maxSaltLen    = 16
)

const b64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// ErrBadHash is wrapped when a hash is not a "$5$" or "$6$" crypt string.
var ErrBadHash = errors.New("not a SHA-256 or SHA-512 crypt hash")

// Methods, as Ironic's rescue_password_hash_algorithm names them.
const (
	SHA256 = "sha256"
	SHA512 = "sha512"
)

// Hash hashes password by method (SHA256 or SHA512) with a random
// 16-character salt, as Python's crypt.crypt(password,
// crypt.mksalt(crypt.METHOD_SHA256 or METHOD_SHA512)) does.
func Hash(method, password string) (string, error) {
	prefix := map[string]string{SHA256: "$5$", SHA512: "$6$"}[method]
	if prefix == "" {
		return "", fmt.Errorf("rescue password hash algorithm %q: want sha256 or sha512", method)
	}
	raw := make([]byte, maxSaltLen)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("salt for the rescue password: %w", err)
	}
	salt := make([]byte, maxSaltLen)
	for i, b := range raw {
		salt[i] = b64[int(b)%len(b64)]
	}
	return Crypt(password, prefix+string(salt))
}

// Crypt is crypt(password, setting) for a "$5$" or "$6$[rounds=N$]salt[$...]"
// setting (a full hash works too: its salt is used).
func Crypt(password, setting string) (string, error) {
	id, newHash := "", sha512.New
	rest, ok := strings.CutPrefix(setting, "$6$")
	if ok {
		id = "$6$"
	} else if rest, ok = strings.CutPrefix(setting, "$5$"); ok {
		id, newHash = "$5$", sha256.New
	} else {
		return "", fmt.Errorf("setting %q: %w", setting, ErrBadHash)
	}
	rounds, custom := DefaultRounds, false
	if r, ok := strings.CutPrefix(rest, "rounds="); ok {
		num, after, found := strings.Cut(r, "$")
		n, err := strconv.Atoi(num)
		if !found || err != nil {
			return "", fmt.Errorf("setting %q: bad rounds: %w", setting, ErrBadHash)
		}
		rounds, custom, rest = min(max(n, minRounds), maxRounds), true, after
	}
	salt, _, _ := strings.Cut(rest, "$")
	if len(salt) > maxSaltLen {
		salt = salt[:maxSaltLen]
	}
	return sum(id, newHash, []byte(password), []byte(salt), rounds, custom), nil
}

// Verify reports whether hash is password's SHA-256 or SHA-512 crypt hash.
func Verify(hash, password string) bool {
	got, err := Crypt(password, hash)
	return err == nil && got == hash
}

func sum(id string, newHash func() hash.Hash, pw, salt []byte, rounds int, custom bool) string {
	size := newHash().Size()
	b := newHash()
	b.Write(pw)
	b.Write(salt)
	b.Write(pw)
	db := b.Sum(nil)

	a := newHash()
	a.Write(pw)
	a.Write(salt)
	for i := len(pw); i > 0; i -= size {
		a.Write(db[:min(i, size)])
	}
	for i := len(pw); i > 0; i >>= 1 {
		if i&1 != 0 {
			a.Write(db)
		} else {
			a.Write(pw)
		}
	}
	da := a.Sum(nil)

	p := newHash()
	for range len(pw) {
		p.Write(pw)
	}
	dp := p.Sum(nil)
	ps := make([]byte, 0, len(pw))
	for i := len(pw); i > 0; i -= size {
		ps = append(ps, dp[:min(i, size)]...)
	}

	s := newHash()
	for range 16 + int(da[0]) {
		s.Write(salt)
	}
	ds := s.Sum(nil)
	ss := make([]byte, 0, len(salt))
	for i := len(salt); i > 0; i -= size {
		ss = append(ss, ds[:min(i, size)]...)
	}

	c := da
	for i := range rounds {
		h := newHash()
		if i&1 != 0 {
			h.Write(ps)
		} else {
			h.Write(c)
		}
		if i%3 != 0 {
			h.Write(ss)
		}
		if i%7 != 0 {
			h.Write(ps)
		}
		if i&1 != 0 {
			h.Write(c)
		} else {
			h.Write(ps)
		}
		c = h.Sum(nil)
	}

	var out strings.Builder
	out.WriteString(id)
	if custom {
		fmt.Fprintf(&out, "rounds=%d$", rounds)
	}
	out.Write(salt)
	out.WriteByte('$')
	enc := func(b2, b1, b0 byte, n int) {
		w := uint(b2)<<16 | uint(b1)<<8 | uint(b0)
		for ; n > 0; n-- {
			out.WriteByte(b64[w&0x3f])
			w >>= 6
		}
	}
	// glibc's byte order: triples (i, i+n, i+2n) rotated by i mod 3, one
	// way for SHA-512 and the other for SHA-256, then the bytes left.
	if size == sha512.Size {
		for i := range 21 {
			t := [3]byte{c[i], c[i+21], c[i+42]}
			r := i % 3
			enc(t[r], t[(r+1)%3], t[(r+2)%3], 4)
		}
		enc(0, 0, c[63], 2)
	} else {
		for i := range 10 {
			t := [3]byte{c[i], c[i+10], c[i+20]}
			r := i % 3
			enc(t[(3-r)%3], t[(4-r)%3], t[(5-r)%3], 4)
		}
		enc(0, c[31], c[30], 3)
	}
	return out.String()
}
