package ipmiload

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/ironlab/ironlab/simulator/bmc"
	"github.com/ironlab/ironlab/simulator/bmc/bmctest"
)

// TestBMCDropsForgedAndReplayed: in an open session, the BMC does not
// answer a request replayed after the sequence window (IPMI 2.0 6.12.13:
// +15/-16 of the last accepted; inside it, go-ipmi answers a duplicate, and
// so does the read loop), a copy with a bad integrity code or a garbled
// payload; the session still works after all of them.
func TestBMCDropsForgedAndReplayed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, suite := range []Suite{Suite3, Suite17} {
		b, err := bmc.New(bmctest.New("n0"), "127.0.0.1:0", bmc.Options{})
		if err != nil {
			t.Fatal(err)
		}
		b.Start(ctx)
		defer b.Close()
		c, err := Open(ctx, b.Addr(), Options{Username: "admin", Password: "password", Suite: suite})
		if err != nil {
			t.Fatal(err)
		}
		s := &c.s
		// answers counts the datagrams that come back within 200 ms.
		answers := func(pkts ...[]byte) int {
			for _, p := range pkts {
				if _, err := c.conn.Write(p); err != nil {
					t.Fatal(err)
				}
			}
			n := 0
			for {
				c.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				if _, err := c.conn.Read(c.in); errors.Is(err, os.ErrDeadlineExceeded) {
					return n
				} else if err != nil {
					t.Fatal(err)
				}
				n++
			}
		}
		req := append([]byte(nil), s.appendRequest(nil, netFnChassis, cmdGetChassisStatus, nil, c.rng)...)
		if n := answers(req); n != 1 {
			t.Errorf("suite %d: a request got %d answers, want 1", suite, n)
		}
		for range 17 {
			if _, err := c.PowerOn(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if n := answers(req); n != 0 {
			t.Errorf("suite %d: a replay 17 requests later got %d answers, want none", suite, n)
		}
		forged := append([]byte(nil), s.appendRequest(nil, netFnChassis, cmdGetChassisStatus, nil, c.rng)...)
		forged[len(forged)-1] ^= 1
		if n := answers(forged); n != 0 {
			t.Errorf("suite %d: a bad integrity code got %d answers", suite, n)
		}
		// A confidentiality pad length beyond the payload, correctly
		// encrypted and signed.
		bad := s.appendRequest(nil, netFnChassis, cmdGetChassisStatus, nil, c.rng)
		blk := bad[32:48] // the one block after the IV
		for i := range blk {
			blk[i] = 0xff ^ bad[16+i]
		}
		s.aes.Encrypt(blk, blk)
		bad = s.sign(bad[:48], 0, 16)
		if n := answers(bad); n != 0 {
			t.Errorf("suite %d: a bad confidentiality pad got %d answers", suite, n)
		}
		if on, err := c.PowerOn(ctx); err != nil || on {
			t.Errorf("suite %d: after the forgeries: power on %v, %v; want off", suite, on, err)
		}
		if err := c.Close(ctx); err != nil {
			t.Error(err)
		}
	}
}
