package images

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestBuildVerifyRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	info, err := Build(&buf, Spec{ID: "demo-1", Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if int64(buf.Len()) != info.Size {
		t.Fatalf("image has %d bytes, info says %d", buf.Len(), info.Size)
	}
	whole := sha256.Sum256(buf.Bytes())
	if got := hex.EncodeToString(whole[:]); got != info.SHA256 {
		t.Errorf("sha256 %s, info says %s", got, info.SHA256)
	}
	m := md5.Sum(buf.Bytes())
	if got := hex.EncodeToString(m[:]); got != info.MD5 {
		t.Errorf("md5 %s, info says %s", got, info.MD5)
	}
	hd, err := Verify(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	want := Header{ID: "demo-1", PayloadSize: info.Size - SectorSize, PayloadSHA256: info.PayloadSHA256}
	if diff := cmp.Diff(want, hd); diff != "" {
		t.Errorf("header (-want +got):\n%s", diff)
	}
	if b := buf.Bytes(); b[510] != 0x55 || b[511] != 0xAA {
		t.Errorf("no boot signature")
	}
	if !bytes.Contains(buf.Bytes()[:512], []byte(info.Marker())) {
		t.Errorf("first sector lacks marker %q", info.Marker())
	}
}

func TestBuildIsDeterministicPerID(t *testing.T) {
	a, _ := Build(&bytes.Buffer{}, Spec{ID: "x", Size: 4096})
	b, _ := Build(&bytes.Buffer{}, Spec{ID: "x", Size: 4096})
	c, _ := Build(&bytes.Buffer{}, Spec{ID: "y", Size: 4096})
	if a != b {
		t.Errorf("same spec built twice differs: %+v vs %+v", a, b)
	}
	if a.PayloadSHA256 == c.PayloadSHA256 {
		t.Errorf("different ids gave the same payload")
	}
}

func TestVerifyDetectsDamage(t *testing.T) {
	var buf bytes.Buffer
	if _, err := Build(&buf, Spec{ID: "dmg", Size: 8192}); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		mutate func([]byte) []byte
		want   error
	}{
		"flipped payload byte": {func(b []byte) []byte { b[5000] ^= 1; return b }, ErrMismatch},
		"zeroed first sector":  {func(b []byte) []byte { clear(b[:512]); return b }, ErrNotAnImage},
		"all zero disk":        {func(b []byte) []byte { return make([]byte, len(b)) }, ErrNotAnImage},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			b := tc.mutate(bytes.Clone(buf.Bytes()))
			_, err := Verify(bytes.NewReader(b))
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("truncated disk", func(t *testing.T) {
		_, err := Verify(bytes.NewReader(buf.Bytes()[:4096]))
		if err == nil || !strings.Contains(err.Error(), "short disk") {
			t.Fatalf("Verify = %v, want a short disk error", err)
		}
	})
}

func TestSpecValidation(t *testing.T) {
	for name, spec := range map[string]Spec{
		"empty id":  {ID: "", Size: 4096},
		"bad char":  {ID: "a/b", Size: 4096},
		"odd size":  {ID: "a", Size: 1000},
		"too small": {ID: "a", Size: 512},
		"long id":   {ID: strings.Repeat("a", 64), Size: 4096},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Build(&bytes.Buffer{}, spec); err == nil {
				t.Fatalf("Build(%+v) succeeded, want an error", spec)
			}
		})
	}
}

func TestBuildFileCaches(t *testing.T) {
	p := filepath.Join(t.TempDir(), "img.raw")
	a, err := BuildFile(p, Spec{ID: "c", Size: 8192})
	if err != nil {
		t.Fatal(err)
	}
	st1, _ := os.Stat(p)
	b, err := BuildFile(p, Spec{ID: "c", Size: 8192})
	if err != nil {
		t.Fatal(err)
	}
	st2, _ := os.Stat(p)
	if a != b || !st1.ModTime().Equal(st2.ModTime()) {
		t.Errorf("second BuildFile rebuilt the image")
	}
	c, err := BuildFile(p, Spec{ID: "c", Size: 16384})
	if err != nil || c.Size != 16384 {
		t.Fatalf("BuildFile with a new size = %+v, %v", c, err)
	}
}
