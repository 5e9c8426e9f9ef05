package fakeagent

// crypt(3)'s SHA-256 and SHA-512 methods, to check a rescue password
// against its hash.

import (
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
)

// RescueReadyLine is what a rescued machine prints on its console once
// finalize_rescue ran: the rescue ramdisk is up, and the hash the rescue
// user logs in with (a scenario's rescue_password expectation reads it).
func RescueReadyLine(hash string) string {
	return "ironlab rescue: rescue mode ready; the rescue user's password hash is " + hash + "\n"
}

// Rounds limits and the default, as in glibc.
const (
	defaultRounds = 5000
	minRounds     = 1000
	maxRounds     = 999999999
	maxSaltLen    = 16
)

const b64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

var errBadHash = errors.New("not a SHA-256 or SHA-512 crypt hash")

// shaCrypt is crypt(password, setting) for a "$5$" or "$6$[rounds=N$]salt[$...]"
// setting (a full hash works too: its salt is used).
func shaCrypt(password, setting string) (string, error) {
	id, newHash := "", sha512.New
	rest, ok := strings.CutPrefix(setting, "$6$")
	if ok {
		id = "$6$"
	} else if rest, ok = strings.CutPrefix(setting, "$5$"); ok {
		id, newHash = "$5$", sha256.New
	} else {
		return "", fmt.Errorf("setting %q: %w", setting, errBadHash)
	}
	rounds, custom := defaultRounds, false
	if r, ok := strings.CutPrefix(rest, "rounds="); ok {
		num, after, found := strings.Cut(r, "$")
		n, err := strconv.Atoi(num)
		if !found || err != nil {
			return "", fmt.Errorf("setting %q: bad rounds: %w", setting, errBadHash)
		}
		rounds, custom, rest = min(max(n, minRounds), maxRounds), true, after
	}
	salt, _, _ := strings.Cut(rest, "$")
	if len(salt) > maxSaltLen {
		salt = salt[:maxSaltLen]
	}
	return sum(id, newHash, []byte(password), []byte(salt), rounds, custom), nil
}

// RescueLogin reports whether password logs the rescue user in: hash is
// what rescue.finalize_rescue stored (Ironic's SHA-256 or SHA-512 crypt,
// "$5$" or "$6$"), as the rescue ramdisk's /etc/shadow holds it. The
// driver's copy of the algorithm (driver/shacrypt) makes the hashes;
// scenarios/contract checks the two agree.
func RescueLogin(hash, password string) bool {
	got, err := shaCrypt(password, hash)
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
