package fakeagent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkImageWrite measures the image write of write_image: an HTTP
// download (loopback) hashed with sha256 and written onto a sparse file
// disk, 16 MiB per op (MB/s is the agent's write throughput).
func BenchmarkImageWrite(b *testing.B) {
	const size = 16 << 20
	image := bytes.Repeat([]byte("ironlab!"), size/8)
	sum := sha256.Sum256(image)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "image", time.Time{}, bytes.NewReader(image))
	}))
	defer srv.Close()
	path := filepath.Join(b.TempDir(), "disk")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.Truncate(path, 2*size); err != nil {
		b.Fatal(err)
	}
	disk, err := OpenFileDisk(path)
	if err != nil {
		b.Fatal(err)
	}
	defer disk.Close()
	a := &Agent{cfg: Config{HTTPClient: srv.Client()}}
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		got, n, err := a.download(context.Background(), srv.URL, "sha256", disk, 2*size, "/dev/vda")
		if err != nil || n != size || got != hex.EncodeToString(sum[:]) {
			b.Fatalf("download: %d bytes, %s, %v", n, got, err)
		}
	}
}
