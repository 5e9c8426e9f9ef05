package fakeagent

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// recordingDisk keeps every WriteAt's offset and length, and the bytes.
type recordingDisk struct {
	mu     sync.Mutex
	data   []byte
	writes [][2]int64
}

func (d *recordingDisk) WriteAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.writes = append(d.writes, [2]int64{off, int64(len(p))})
	copy(d.data[off:], p)
	return len(p), nil
}

// TestDownloadWritesAlignedChunks: however the body arrives (here in
// 1000-byte flushes), the image reaches the disk in whole 1 MiB chunks at
// 1 MiB offsets from an aligned buffer, the short tail last, so a block
// device can take them with O_DIRECT; the bytes and the hash are the
// image's.
func TestDownloadWritesAlignedChunks(t *testing.T) {
	const size = 3<<20 + 12345
	image := make([]byte, size)
	for i := range image {
		image[i] = byte(i * 31 / 7)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for p := image; len(p) > 0; {
			n := min(1000, len(p))
			w.Write(p[:n])
			w.(http.Flusher).Flush()
			p = p[n:]
		}
	}))
	defer srv.Close()
	disk := &recordingDisk{data: make([]byte, 4<<20)}
	a := &Agent{cfg: Config{HTTPClient: srv.Client()}}
	got, n, err := a.download(context.Background(), srv.URL, "sha512", disk, int64(len(disk.data)), "/dev/vda")
	if err != nil || n != size {
		t.Fatalf("download: %d bytes, %v", n, err)
	}
	want := sha512.Sum512(image)
	if got != hex.EncodeToString(want[:]) {
		t.Errorf("sha512 %s, want %x", got, want)
	}
	if !bytes.Equal(disk.data[:size], image) {
		t.Error("the disk does not hold the image")
	}
	wantWrites := [][2]int64{{0, 1 << 20}, {1 << 20, 1 << 20}, {2 << 20, 1 << 20}, {3 << 20, 12345}}
	if len(disk.writes) != len(wantWrites) {
		t.Fatalf("writes %v, want %v", disk.writes, wantWrites)
	}
	for i, w := range wantWrites {
		if disk.writes[i] != w {
			t.Errorf("write %d at %d+%d, want %d+%d", i, disk.writes[i][0], disk.writes[i][1], w[0], w[1])
		}
	}
}

// TestDownloadTruncatedBody: a body cut short of its Content-Length fails
// the download (it is not taken for the end of a shorter image).
func TestDownloadTruncatedBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "2000000")
		w.Write(make([]byte, 1500000))
		// The handler returns: the server closes the connection short.
	}))
	defer srv.Close()
	disk := &recordingDisk{data: make([]byte, 4<<20)}
	a := &Agent{cfg: Config{HTTPClient: srv.Client()}}
	_, _, err := a.download(context.Background(), srv.URL, "sha256", disk, int64(len(disk.data)), "/dev/vda")
	if err == nil || !strings.Contains(err.Error(), "short read") {
		t.Fatalf("err = %v, want a short read", err)
	}
}

func TestAlignedBuffer(t *testing.T) {
	for _, n := range []int{DirectAlign, 1 << 20} {
		b := AlignedBuffer(n)
		if len(b) != n || cap(b) != n || !aligned(b, 0) {
			t.Errorf("AlignedBuffer(%d): len %d cap %d, aligned %v", n, len(b), cap(b), aligned(b, 0))
		}
	}
	b := AlignedBuffer(2 * DirectAlign)
	if aligned(b[1:DirectAlign+1], 0) || aligned(b[:100], 0) || aligned(b, 512) {
		t.Error("misaligned writes taken for aligned ones")
	}
}

// The pooled image-write buffers stay aligned whole MiBs through reuse, so
// a block device keeps getting O_DIRECT writes.
func TestPooledAlignedBuffers(t *testing.T) {
	var held []*[]byte
	for range 4 {
		for range 3 {
			b, p := alignedMiB()
			if len(b) != mib || !aligned(b, 0) {
				t.Fatalf("pooled buffer: len %d, aligned %v; want an aligned MiB", len(b), aligned(b, 0))
			}
			held = append(held, p)
		}
		for _, p := range held {
			alignedMiBs.Put(p)
		}
		held = held[:0]
	}
}
