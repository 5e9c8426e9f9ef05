package imageserver

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ironlab/ironlab/images"
	"github.com/ironlab/ironlab/images/qcow2"
)

func start(t *testing.T) (*Server, images.Info) {
	t.Helper()
	s := New(t.TempDir(), nil)
	info, err := s.Build(images.Spec{ID: "img", Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, info
}

func get(t *testing.T, url string) (int, []byte, error) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func TestServesImageAndChecksums(t *testing.T) {
	s, info := start(t)
	code, body, err := get(t, s.URL("img"))
	if err != nil || code != 200 {
		t.Fatalf("GET image: %d %v", code, err)
	}
	if sum(body) != info.SHA256 {
		t.Errorf("served bytes hash %s, want %s", sum(body), info.SHA256)
	}
	_, sha, _ := get(t, s.URL("img")+".sha256")
	if !strings.HasPrefix(string(sha), info.SHA256) {
		t.Errorf(".sha256 = %q, want %s", sha, info.SHA256)
	}
	if s512 := sha512.Sum512(body); info.SHA512 != hex.EncodeToString(s512[:]) {
		t.Errorf("info's sha512 %s is not the served bytes' %x", info.SHA512, s512)
	}
	_, sha5, _ := get(t, s.URL("img")+".sha512")
	if !strings.HasPrefix(string(sha5), info.SHA512) {
		t.Errorf(".sha512 = %q, want %s", sha5, info.SHA512)
	}
	_, md5, _ := get(t, s.URL("img")+".md5")
	if !strings.HasPrefix(string(md5), info.MD5) {
		t.Errorf(".md5 = %q, want %s", md5, info.MD5)
	}
	if got := s.BytesServed(); got != info.Size {
		t.Errorf("BytesServed = %d, want %d", got, info.Size)
	}
	if code, _, _ := get(t, strings.Replace(s.URL("img"), "img", "nope", 1)); code != 404 {
		t.Errorf("unknown image: %d, want 404", code)
	}
}

func TestFaults(t *testing.T) {
	s, info := start(t)
	t.Run("not found", func(t *testing.T) {
		s.SetFaults("img", Faults{NotFound: true})
		if code, _, _ := get(t, s.URL("img")); code != 404 {
			t.Errorf("code %d, want 404", code)
		}
	})
	t.Run("corrupt", func(t *testing.T) {
		s.SetFaults("img", Faults{CorruptAt: 4096})
		_, body, err := get(t, s.URL("img"))
		if err != nil || int64(len(body)) != info.Size {
			t.Fatalf("got %d bytes, %v", len(body), err)
		}
		if sum(body) == info.SHA256 {
			t.Errorf("corrupt transfer still matches the checksum")
		}
	})
	t.Run("drop", func(t *testing.T) {
		s.SetFaults("img", Faults{DropAfter: 100000})
		_, body, err := get(t, s.URL("img"))
		if err == nil {
			t.Fatalf("dropped transfer read cleanly (%d bytes)", len(body))
		}
		if len(body) > 100000 {
			t.Errorf("read %d bytes past the drop point", len(body))
		}
	})
	t.Run("slow still complete", func(t *testing.T) {
		s.SetFaults("img", Faults{BytesPerSecond: 20 << 20})
		_, body, err := get(t, s.URL("img"))
		if err != nil || sum(body) != info.SHA256 {
			t.Fatalf("slow transfer: %d bytes, %v", len(body), err)
		}
	})
}

// Labs share the image cache; the same id at two sizes must not clobber
// each other (this once served a 64 MiB image under a 16 MiB image's sums).
func TestSharedCacheSameIDOtherSize(t *testing.T) {
	dir := t.TempDir()
	a, b := New(dir, nil), New(dir, nil)
	ia, err := a.Build(images.Spec{ID: "os", Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Build(images.Spec{ID: "os", Size: 2 << 20}); err != nil {
		t.Fatal(err)
	}
	if err := a.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	_, body, err := get(t, a.URL("os"))
	if err != nil || sum(body) != ia.SHA256 || int64(len(body)) != ia.Size {
		t.Errorf("first lab's image: %d bytes, sha %s, want %d bytes %s (%v)", len(body), sum(body), ia.Size, ia.SHA256, err)
	}
}

func TestServesBootFiles(t *testing.T) {
	s, _ := start(t)
	url := s.AddFile("deploy_kernel", []byte("stand-in kernel\n"))
	path := filepath.Join(t.TempDir(), "initramfs")
	if err := os.WriteFile(path, []byte("ramdisk bytes"), 0o644); err != nil {
		t.Fatal(err)
	}
	url2 := s.AddFilePath("deploy_ramdisk", path)
	for _, c := range []struct{ url, want string }{{url, "stand-in kernel\n"}, {url2, "ramdisk bytes"}} {
		code, body, err := get(t, c.url)
		if err != nil || code != 200 || string(body) != c.want {
			t.Errorf("GET %s: %d %q %v, want 200 %q", c.url, code, body, err, c.want)
		}
	}
	if code, _, _ := get(t, s.FileURL("nope")); code != 404 {
		t.Errorf("GET unknown file: %d, want 404", code)
	}
}

// TestServesQcow2: a qcow2 image is served as qcow2 at <id>.qcow2 with the
// checksums of those bytes, and converts back to the raw image the disk
// expectation compares.
func TestServesQcow2(t *testing.T) {
	s := New(t.TempDir(), nil)
	info, err := s.Build(images.Spec{ID: "q", Size: 1 << 20, Format: images.FormatQcow2})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if !strings.HasSuffix(s.URL("q"), "/images/q.qcow2") || info.Format != "qcow2" {
		t.Fatalf("URL %s format %q, want .../images/q.qcow2 and qcow2", s.URL("q"), info.Format)
	}
	code, body, err := get(t, s.URL("q"))
	if err != nil || code != 200 {
		t.Fatalf("GET image: %d %v", code, err)
	}
	if !qcow2.IsQcow2(body) || sum(body) != info.SHA256 {
		t.Fatalf("served %d bytes (qcow2 magic %v) hashing %s, want qcow2 bytes hashing %s", len(body), qcow2.IsQcow2(body), sum(body), info.SHA256)
	}
	_, sha, _ := get(t, s.URL("q")+".sha256")
	if string(sha) != info.SHA256+"  q.qcow2\n" {
		t.Errorf(".sha256 = %q, want %s  q.qcow2", sha, info.SHA256)
	}
	im, err := qcow2.Open(bytes.NewReader(body), int64(len(body)))
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, im.Size())
	if _, err := im.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(s.Path("q"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, raw) {
		t.Fatal("the served qcow2 does not read back as the raw image")
	}
	if _, err := images.Verify(bytes.NewReader(got)); err != nil {
		t.Errorf("the converted image does not verify: %v", err)
	}
	if code, _, _ := get(t, strings.TrimSuffix(s.URL("q"), ".qcow2")+".raw"); code != 404 {
		t.Errorf("GET q.raw of a qcow2 image: %d, want 404", code)
	}
	if _, err := s.Build(images.Spec{ID: "v", Size: 1 << 20, Format: "vmdk"}); err == nil {
		t.Error("a vmdk image spec was accepted")
	}
}
