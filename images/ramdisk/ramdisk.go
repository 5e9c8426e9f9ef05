// Package ramdisk builds the agent ramdisk the libvirt backend network-boots:
// Debian's cloud kernel (apt-get download + dpkg -x into a cache, never
// installed on the host) and a newc initramfs written here (LZ4, or gzip
// without the lz4 tool), holding the static ironlab binary as /init and the
// virtio modules it loads.
//
// Everything derived is cached under the cache folder and rebuilt only when a
// hash of its inputs (kernel package, module files, binary, layout version)
// changes.
package ramdisk

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/cavaliergopher/cpio"
)

// Wanted are the modules /init needs (virtio PCI transport, disk, NIC); their
// dependencies come along, read from .modinfo.
var Wanted = []string{"virtio_pci", "virtio_blk", "virtio_net"}

// Paths inside the initramfs that /init (fakeagent/ramdisk) reads.
const (
	ModuleDir       = "/lib/modules"            // <name>.ko
	ModuleOrderFile = "/lib/modules/load-order" // one name per line, in load order
	InfoFile        = "/etc/ironlab-ramdisk"    // kernel release and input hash
)

// layoutVersion changes whenever the initramfs layout changes, so cached
// ramdisks from older code are rebuilt.
const layoutVersion = "ironlab-ramdisk-3"

// InitrdName is the initramfs's file name in the cache and in a boot folder
// (the kernel tells LZ4 from gzip by the content).
const InitrdName = "initramfs.img"

// Options say where to cache and which binary becomes /init.
type Options struct {
	// CacheDir holds the downloaded kernel and built ramdisks; "" means
	// DefaultCacheDir().
	CacheDir string
	// Binary is the static ironlab binary for /init; "" means this process's
	// executable if it is static, else `CGO_ENABLED=0 go build ./cmd/ironlab`
	// in SourceDir.
	Binary string
	// SourceDir is the module root to build the binary from; "" means the
	// current directory's module.
	SourceDir string
	// Progress receives one line per step; nil is silent.
	Progress io.Writer
}

// Ramdisk is a built agent ramdisk: files in the cache, ready to install in
// a boot folder.
type Ramdisk struct {
	Kernel string `json:"kernel"` // absolute path of the bzImage
	// ELFKernel is the same kernel decompressed (vmlinux, booted via PVH by
	// a direct kernel boot); "" without lz4. iPXE needs the bzImage.
	ELFKernel     string   `json:"elf_kernel,omitempty"`
	Initrd        string   `json:"initrd"` // absolute path of the initramfs (InitrdName)
	KernelPackage string   `json:"kernel_package"`
	KernelVersion string   `json:"kernel_version"`
	KernelRelease string   `json:"kernel_release"`
	Modules       []string `json:"modules"` // in load order
	InputHash     string   `json:"input_hash"`
	Rebuilt       bool     `json:"rebuilt"` // false when the cache was current
}

// DefaultCacheDir is the user's cache folder's ironlab/ ($XDG_CACHE_HOME
// or ~/.cache, as os.UserCacheDir finds it). ironlab's commands take
// $IRONLAB_CACHE over it and pass it as Options.CacheDir.
func DefaultCacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "ironlab")
	}
	return filepath.Join(os.TempDir(), "ironlab-cache")
}

// Build makes sure the agent ramdisk in the cache is current and returns it.
func Build(ctx context.Context, o Options) (Ramdisk, error) {
	if o.CacheDir == "" {
		o.CacheDir = DefaultCacheDir()
	}
	cache, err := filepath.Abs(o.CacheDir)
	if err != nil {
		return Ramdisk{}, err
	}
	progress := func(format string, args ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "images: "+format+"\n", args...)
		}
	}
	// libvirt's qemu user reads the kernel and initramfs from here.
	if err := mkdirReadable(cache); err != nil {
		return Ramdisk{}, err
	}
	k, err := fetchKernel(ctx, cache, progress)
	if err != nil {
		return Ramdisk{}, err
	}
	mods, err := resolveModules(k, Wanted)
	if err != nil {
		return Ramdisk{}, err
	}
	bin, err := agentBinary(ctx, o, cache, progress)
	if err != nil {
		return Ramdisk{}, err
	}

	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s %s %s\n", layoutVersion, k.Package, k.Version, k.Release)
	for _, m := range mods {
		fmt.Fprintf(h, "module %s %s\n", m.Name, fileHash(m.Path))
	}
	fmt.Fprintf(h, "binary %s\n", fileHash(bin))
	// lz4 makes both the ELF kernel and an LZ4 initramfs: one input.
	elfKernel := lz4Available()
	fmt.Fprintf(h, "elf kernel %v\n", elfKernel)
	sum := hex.EncodeToString(h.Sum(nil))

	r := Ramdisk{KernelPackage: k.Package, KernelVersion: k.Version, KernelRelease: k.Release, InputHash: sum}
	for _, m := range mods {
		r.Modules = append(r.Modules, m.Name)
	}
	out := filepath.Join(cache, "agent")
	if err := mkdirReadable(out); err != nil {
		return Ramdisk{}, err
	}
	r.Kernel = filepath.Join(out, "vmlinuz")
	r.Initrd = filepath.Join(out, InitrdName)
	os.Remove(filepath.Join(out, "initramfs.gz")) // the name before ironlab-ramdisk-3
	if elfKernel {
		r.ELFKernel = filepath.Join(out, ELFKernelName)
	}
	stamp := filepath.Join(out, "inputs.sha256")
	if b, err := os.ReadFile(stamp); err == nil && strings.TrimSpace(string(b)) == sum && exists(r.Kernel) && exists(r.Initrd) && (r.ELFKernel == "" || exists(r.ELFKernel)) {
		progress("agent ramdisk: cached (%s, inputs %s)", r.Initrd, sum[:12])
		return r, nil
	}
	progress("agent ramdisk: writing initramfs (/init = %s, modules %s)", bin, strings.Join(r.Modules, " "))
	if err := copyFile(k.Image, r.Kernel); err != nil {
		return Ramdisk{}, err
	}
	if elfKernel {
		if err := extractVmlinux(ctx, k.Image, r.ELFKernel); err != nil {
			return Ramdisk{}, fmt.Errorf("agent ramdisk: ELF kernel from %s: %w", k.Image, err)
		}
	} else {
		progress("agent ramdisk: no lz4 (scripts/vm-deps.sh installs it): direct boots take the bzImage and a gzip initramfs, ~1 s slower than the ELF vmlinux and LZ4")
	}
	if err := writeInitramfs(ctx, r.Initrd, bin, mods, fmt.Sprintf("release=%s\ninputs=%s\n", k.Release, sum), elfKernel); err != nil {
		return Ramdisk{}, err
	}
	if err := os.WriteFile(stamp, []byte(sum+"\n"), 0o644); err != nil {
		return Ramdisk{}, err
	}
	r.Rebuilt = true
	st, _ := os.Stat(r.Initrd)
	progress("agent ramdisk: built %s (%d KiB) and %s", r.Initrd, st.Size()>>10, r.Kernel)
	return r, nil
}

// Install hard-links (or copies) the ramdisk into dir/sub of a boot folder
// and returns the paths relative to dir, as a boot entry names them.
func (r Ramdisk) Install(dir, sub string) (kernel, initrd string, err error) {
	target := filepath.Join(dir, sub)
	if err := mkdirReadable(target); err != nil {
		return "", "", err
	}
	files := []struct{ from, to string }{{r.Kernel, "vmlinuz"}, {r.Initrd, InitrdName}}
	if r.ELFKernel != "" {
		files = append(files, struct{ from, to string }{r.ELFKernel, ELFKernelName})
	} else {
		os.Remove(filepath.Join(target, ELFKernelName))
	}
	for _, f := range files {
		dst := filepath.Join(target, f.to)
		os.Remove(dst)
		if err := os.Link(f.from, dst); err != nil {
			if err := copyFile(f.from, dst); err != nil {
				return "", "", err
			}
		}
	}
	return filepath.ToSlash(filepath.Join(sub, "vmlinuz")), filepath.ToSlash(filepath.Join(sub, InitrdName)), nil
}

// writeInitramfs writes the newc cpio archive, compressed with `lz4 -l`
// (the legacy frame the kernel reads) when lz4 is set, else gzip. Under
// TCG the kernel unpacked the ~14 MiB gzip archive (a ~40 MiB binary) in
// 0.65-1.2 s of every boot, LZ4 in a third of that. Headers carry no
// checksum: setting Header.Checksum switches cavaliergopher/cpio's global
// magic to "crc" for every later header.
func writeInitramfs(ctx context.Context, path, bin string, mods []Module, info string, lz4 bool) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".initramfs-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close() // every error return; after the explicit Close below, a no-op
	var plain bytes.Buffer
	cw := cpio.NewWriter(&plain)
	epoch := time.Unix(0, 0) // fixed mtimes: the same inputs give the same bytes
	dir := func(name string) error {
		return cw.WriteHeader(&cpio.Header{Name: name, Mode: cpio.TypeDir | 0o755, ModTime: epoch, Links: 2})
	}
	file := func(name string, mode cpio.FileMode, src io.Reader, size int64) error {
		if err := cw.WriteHeader(&cpio.Header{Name: name, Mode: cpio.TypeReg | mode, Size: size, ModTime: epoch, Links: 1}); err != nil {
			return fmt.Errorf("initramfs %s: %w", name, err)
		}
		n, err := io.Copy(cw, src)
		if err == nil && n != size {
			err = fmt.Errorf("wrote %d of %d bytes", n, size)
		}
		if err != nil {
			return fmt.Errorf("initramfs %s: %w", name, err)
		}
		return nil
	}
	fromDisk := func(name string, mode cpio.FileMode, src string) error {
		f, err := os.Open(src)
		if err != nil {
			return err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return err
		}
		return file(name, mode, f, st.Size())
	}
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "etc", "lib", "lib/modules"} {
		if err := dir(d); err != nil {
			return err
		}
	}
	if err := fromDisk("init", 0o755, bin); err != nil {
		return err
	}
	var order strings.Builder
	for _, m := range mods {
		if err := fromDisk(strings.TrimPrefix(ModuleDir, "/")+"/"+m.Name+".ko", 0o644, m.Path); err != nil {
			return err
		}
		order.WriteString(m.Name + "\n")
	}
	for _, f := range [][2]string{
		{strings.TrimPrefix(ModuleOrderFile, "/"), order.String()},
		{strings.TrimPrefix(InfoFile, "/"), info},
	} {
		if err := file(f[0], 0o644, strings.NewReader(f[1]), int64(len(f[1]))); err != nil {
			return err
		}
	}
	if err := cw.Close(); err != nil {
		return err
	}
	if lz4 {
		cmd := exec.CommandContext(ctx, "lz4", "-l", "-q", "-c")
		cmd.Stdin, cmd.Stdout = &plain, tmp
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("initramfs: lz4 -l: %w: %s", err, strings.TrimSpace(stderr.String()))
		}
	} else {
		bw := bufio.NewWriterSize(tmp, 1<<20)
		gz, _ := gzip.NewWriterLevel(bw, gzip.BestCompression)
		if _, err := plain.WriteTo(gz); err != nil {
			return err
		}
		if err := gz.Close(); err != nil {
			return err
		}
		if err := bw.Flush(); err != nil {
			return err
		}
	}
	if err := tmp.Chmod(0o644); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// agentBinary finds or builds the static ironlab binary for /init.
func agentBinary(ctx context.Context, o Options, cache string, progress func(string, ...any)) (string, error) {
	if o.Binary != "" {
		if err := checkStatic(o.Binary); err != nil {
			return "", err
		}
		return o.Binary, nil
	}
	if self, err := os.Executable(); err == nil && strings.HasPrefix(filepath.Base(self), "ironlab") && checkStatic(self) == nil {
		return self, nil
	}
	out := filepath.Join(cache, "bin", "ironlab")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", err
	}
	progress("building static ironlab binary (CGO_ENABLED=0 go build ./cmd/ironlab)")
	// No -trimpath: it changes every package's build key, so the build
	// recompiled the whole module graph (modernc.org/sqlite's C-to-Go
	// translation most of all: 175 s cold on 2 idle cores) even when `make
	// test` (CGO_ENABLED=0) had just compiled the same packages; under the
	// test suite's load that passed the VM tests' 5-minute bound.
	cmd := exec.CommandContext(ctx, "go", "build", "-ldflags=-s -w", "-o", out, "./cmd/ironlab")
	cmd.Dir = o.SourceDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build static ironlab binary: %w: %s", err, b)
	}
	return out, checkStatic(out)
}

// ErrNotStatic is returned for a binary that needs a dynamic loader: the
// ramdisk has no libc.
var ErrNotStatic = errors.New("binary is not statically linked (build with CGO_ENABLED=0)")

func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("agent binary %s: %w", path, err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("agent binary %s: machine %v, want x86-64", path, f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("agent binary %s: %w", path, ErrNotStatic)
		}
	}
	return nil
}

func fileHash(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return "missing:" + path
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil))
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func mkdirReadable(d string) error {
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".copy-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}
