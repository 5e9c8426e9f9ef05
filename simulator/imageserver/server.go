// Package imageserver is the lab's HTTP image server: it serves the test disk
// images the agents download, with their checksums, and takes fault knobs
// (404, slow transfer, corrupt bytes, a dropped connection) per image.
package imageserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ironlab/ironlab/images"
	"github.com/ironlab/ironlab/images/qcow2"
	"github.com/ironlab/ironlab/internal/httpstop"
)

// Faults change how an image is served.
type Faults struct {
	// NotFound answers 404 for the image.
	NotFound bool `yaml:"not_found" json:"not_found"`
	// BytesPerSecond throttles the transfer (0: no limit).
	BytesPerSecond int64 `yaml:"bytes_per_second" json:"bytes_per_second"`
	// CorruptAt flips a byte at this offset (> 0) of the body.
	CorruptAt int64 `yaml:"corrupt_at" json:"corrupt_at"`
	// DropAfter closes the connection after this many body bytes (> 0).
	DropAfter int64 `yaml:"drop_after" json:"drop_after"`
}

// Server serves images from a folder.
type Server struct {
	dir string
	log *slog.Logger

	mu     sync.Mutex
	images map[string]images.Info
	faults map[string]Faults
	files  map[string]file // /files/<name>: boot files such as deploy_kernel

	served atomic.Int64 // body bytes sent, all images
	srv    *httpstop.Server
	addr   string
}

// New serves the images in dir; Add registers each one.
func New(dir string, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{dir: dir, log: log, images: map[string]images.Info{}, faults: map[string]Faults{}, files: map[string]file{}}
}

// file is one served boot file: bytes in memory or a file on disk.
type file struct {
	data []byte
	path string
}

// AddFile serves data at /files/<name> and returns its URL (valid once the
// server has started). A real Ironic downloads driver_info's deploy_kernel
// and deploy_ramdisk into its cache before it boots a node, so they must be
// served even where the lab's nodes do not boot them.
func (s *Server) AddFile(name string, data []byte) string {
	s.mu.Lock()
	s.files[name] = file{data: data}
	s.mu.Unlock()
	return s.FileURL(name)
}

// AddFilePath serves the file at path as /files/<name> (read at each request).
func (s *Server) AddFilePath(name, path string) string {
	s.mu.Lock()
	s.files[name] = file{path: path}
	s.mu.Unlock()
	return s.FileURL(name)
}

// FileURL is the download URL of a file added with AddFile or AddFilePath.
func (s *Server) FileURL(name string) string { return "http://" + s.addr + "/files/" + name }

func (s *Server) serveFile(w http.ResponseWriter, r *http.Request, name string) {
	s.mu.Lock()
	f, ok := s.files[name]
	s.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	if f.path != "" {
		http.ServeFile(w, r, f.path)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", fmt.Sprint(len(f.data)))
	if r.Method == http.MethodHead {
		return
	}
	n, _ := w.Write(f.data)
	s.served.Add(int64(n))
}

// Path is where an image's raw file lives: the bytes a deployed disk
// holds. The size is part of the name: the folder is a cache shared by
// labs, and two labs may give the same id to images of different sizes
// (same id and size means the same bytes).
func (s *Server) Path(id string) string {
	s.mu.Lock()
	info, ok := s.images[id]
	s.mu.Unlock()
	if !ok {
		return ""
	}
	return pathOf(s.dir, images.Spec{ID: info.ID, Size: info.Size})
}

// ServedPath is the file served at the image's URL: the raw file, or the
// qcow2 file written beside it for a qcow2 image.
func (s *Server) ServedPath(id string) string {
	s.mu.Lock()
	info, ok := s.images[id]
	s.mu.Unlock()
	if !ok {
		return ""
	}
	return servedPathOf(s.dir, info)
}

func pathOf(dir string, spec images.Spec) string {
	return filepath.Join(dir, fmt.Sprintf("%s-%d.raw", spec.ID, spec.Size))
}

func servedPathOf(dir string, info images.Info) string {
	p := pathOf(dir, images.Spec{ID: info.ID, Size: info.Size})
	if info.Format == images.FormatQcow2 {
		return strings.TrimSuffix(p, ".raw") + ".qcow2"
	}
	return p
}

// ext is the served file's name ending, which says its format.
func ext(info images.Info) string {
	if info.Format == images.FormatQcow2 {
		return ".qcow2"
	}
	return ".raw"
}

// Build builds (or reuses) an image and serves it. A qcow2 image is built
// raw, then written as qcow2 beside the raw file; the served file's
// checksums (Info.SHA256, SHA512, MD5) are then those of the qcow2 bytes, which
// is what Ironic and the agent verify before they convert it.
func (s *Server) Build(spec images.Spec) (images.Info, error) {
	raw := pathOf(s.dir, spec)
	info, err := images.BuildFile(raw, spec)
	if err != nil {
		return info, err
	}
	if spec.Format == images.FormatQcow2 {
		info.Format = images.FormatQcow2
		if err := writeQcow2(raw, servedPathOf(s.dir, info), &info); err != nil {
			return images.Info{}, fmt.Errorf("image %s: %w", spec.ID, err)
		}
	}
	s.mu.Lock()
	s.images[spec.ID] = info
	s.mu.Unlock()
	return info, nil
}

// writeQcow2 writes the raw image at raw (info.Size bytes) as qcow2 to
// path (through a temporary file, as labs share the folder) and sets info's
// sums to the qcow2 file's.
func writeQcow2(raw, path string, info *images.Info) error {
	src, err := os.Open(raw)
	if err != nil {
		return err
	}
	defer src.Close()
	tmp, err := os.CreateTemp(filepath.Dir(path), ".qcow2-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	sums := images.NewFileSums()
	err = qcow2.Write(context.Background(), io.MultiWriter(tmp, sums), src, info.Size)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write qcow2 %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	sums.Fill(info)
	return nil
}

// checksumFiles are the checksum files served beside each image: the
// suffix after its file name, and the sum the file holds.
var checksumFiles = []struct {
	suffix string
	of     func(images.Info) string
}{
	{".sha256", func(i images.Info) string { return i.SHA256 }},
	{".sha512", func(i images.Info) string { return i.SHA512 }},
	{".md5", func(i images.Info) string { return i.MD5 }},
}

// Info returns a served image's description.
func (s *Server) Info(id string) (images.Info, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.images[id]
	return i, ok
}

// SetFaults replaces an image's fault knobs.
func (s *Server) SetFaults(id string, f Faults) {
	s.mu.Lock()
	s.faults[id] = f
	s.mu.Unlock()
}

// BytesServed is how many image bytes the server has sent in all.
func (s *Server) BytesServed() int64 { return s.served.Load() }

// URL is an image's download URL: /images/<id>.raw, or .qcow2 for a qcow2
// image.
func (s *Server) URL(id string) string {
	info, _ := s.Info(id)
	return "http://" + s.addr + "/images/" + id + ext(info)
}

// Addr is where the server listens.
func (s *Server) Addr() string { return s.addr }

// Start listens on addr (a loopback address; port 0 picks one).
func (s *Server) Start(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("image server: %w", err)
	}
	s.addr = ln.Addr().String()
	s.srv = httpstop.New(&http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second})
	go s.srv.Serve(ln)
	return nil
}

// Close stops the server.
func (s *Server) Close() error {
	if s.srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}

// ServeHTTP answers GET /images/<id>.raw (or .qcow2),
// /images/<id>.raw.{sha256,md5} and /files/<name>.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if name, ok := strings.CutPrefix(r.URL.Path, "/files/"); ok {
		s.serveFile(w, r, name)
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, "/images/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	for _, sum := range checksumFiles {
		if file, ok := strings.CutSuffix(name, sum.suffix); ok {
			id, info, found := s.byFileName(file)
			if !found {
				http.NotFound(w, r)
				return
			}
			fmt.Fprintf(w, "%s  %s%s\n", sum.of(info), id, ext(info))
			return
		}
	}
	id, info, found := s.byFileName(name)
	s.mu.Lock()
	f := s.faults[id]
	s.mu.Unlock()
	if !found || f.NotFound {
		http.NotFound(w, r)
		return
	}
	file, err := os.Open(servedPathOf(s.dir, info))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer file.Close()
	st, err := file.Stat()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", fmt.Sprint(st.Size()))
	if r.Method == http.MethodHead {
		return
	}
	n, err := s.copy(r.Context(), w, file, f)
	s.served.Add(n)
	if err != nil && !errors.Is(err, errDropped) {
		s.log.Debug("image transfer ended", "image", id, "bytes", n, "err", err)
	}
	if errors.Is(err, errDropped) {
		// Abort the response so the client sees a broken transfer, not EOF.
		panic(http.ErrAbortHandler)
	}
}

// byFileName finds the image served as name (<id>.raw or <id>.qcow2, the
// ending its format's).
func (s *Server) byFileName(name string) (string, images.Info, bool) {
	for _, e := range []string{".raw", ".qcow2"} {
		if id, ok := strings.CutSuffix(name, e); ok {
			info, found := s.Info(id)
			if found && ext(info) == e {
				return id, info, true
			}
		}
	}
	return "", images.Info{}, false
}

var errDropped = errors.New("connection dropped by fault")

// copyBufs holds copy's buffers: one per image download, and every node
// of a deploy downloads at once.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

func (s *Server) copy(ctx context.Context, w io.Writer, r io.Reader, f Faults) (int64, error) {
	// The buffer goes back when copy returns: Read and Write are done with
	// it by then (a ResponseWriter copies what it is given).
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	if f.BytesPerSecond > 0 && int64(len(buf)) > f.BytesPerSecond/10+1 {
		buf = buf[:f.BytesPerSecond/10+1]
	}
	var sent int64
	start := time.Now()
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if f.CorruptAt > 0 && f.CorruptAt >= sent && f.CorruptAt < sent+int64(n) {
				chunk[f.CorruptAt-sent] ^= 0xFF
			}
			if f.DropAfter > 0 && sent+int64(n) > f.DropAfter {
				chunk = chunk[:f.DropAfter-sent]
				m, _ := w.Write(chunk)
				if fl, ok := w.(http.Flusher); ok {
					fl.Flush()
				}
				return sent + int64(m), errDropped
			}
			m, err := w.Write(chunk)
			sent += int64(m)
			if err != nil {
				return sent, err
			}
			if f.BytesPerSecond > 0 {
				due := start.Add(time.Duration(float64(sent) / float64(f.BytesPerSecond) * float64(time.Second)))
				select {
				case <-time.After(time.Until(due)):
				case <-ctx.Done():
					return sent, ctx.Err()
				}
			}
		}
		if rerr == io.EOF {
			return sent, nil
		}
		if rerr != nil {
			return sent, rerr
		}
	}
}
