package ramdisk

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// KernelMeta is Debian's metapackage that names the current cloud kernel.
const KernelMeta = "linux-image-cloud-amd64"

// Kernel is an unpacked Debian guest kernel in the cache.
type Kernel struct {
	Package string // e.g. linux-image-6.1.0-56-cloud-amd64
	Version string // the .deb's version, e.g. 6.1.192-2
	Release string // uname -r, e.g. 6.1.0-56-cloud-amd64
	Root    string // where dpkg -x unpacked it
	Image   string // Root/boot/vmlinuz-<release>
}

// resolveKernelPackage finds the versioned kernel package the metapackage
// depends on, and its candidate version, running apt-get update once when
// the package lists do not know it yet.
func resolveKernelPackage(ctx context.Context, progress func(string, ...any)) (pkg, version string, err error) {
	for attempt := 0; ; attempt++ {
		pkg, err = aptDepends(ctx, KernelMeta)
		if err == nil {
			version, err = aptCandidate(ctx, pkg)
		}
		if err == nil || attempt > 0 {
			return pkg, version, err
		}
		progress("apt-get update (package lists do not resolve %s: %v)", KernelMeta, err)
		if out, uerr := exec.CommandContext(ctx, "apt-get", "update", "-qq").CombinedOutput(); uerr != nil {
			return "", "", fmt.Errorf("apt-get update: %w: %s", uerr, out)
		}
	}
}

func aptDepends(ctx context.Context, meta string) (string, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", meta).Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache depends %s: %w", meta, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		dep, ok := strings.CutPrefix(strings.TrimSpace(line), "Depends: ")
		if ok && strings.HasPrefix(dep, "linux-image-") {
			return strings.TrimSpace(dep), nil
		}
	}
	return "", fmt.Errorf("apt-cache depends %s: no linux-image-* dependency", meta)
}

func aptCandidate(ctx context.Context, pkg string) (string, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "policy", pkg).Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache policy %s: %w", pkg, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Candidate: "); ok && v != "(none)" {
			return v, nil
		}
	}
	return "", fmt.Errorf("apt-cache policy %s: no candidate version", pkg)
}

// fetchKernel makes sure the kernel package is downloaded (apt-get download,
// never installed on the host) and unpacked (dpkg -x) under cacheDir/kernel.
// An unpacked kernel is reused; when apt cannot resolve one at all (no
// package lists, no network), the newest kernel already cached is used.
func fetchKernel(ctx context.Context, cacheDir string, progress func(string, ...any)) (Kernel, error) {
	base := filepath.Join(cacheDir, "kernel")
	// Test packages (go test ./... runs them in parallel) and ironlab
	// commands share the cache: one fetch at a time, the next finds it.
	if err := os.MkdirAll(base, 0o755); err != nil {
		return Kernel{}, err
	}
	lock, err := os.OpenFile(filepath.Join(base, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return Kernel{}, fmt.Errorf("kernel cache %s: %w", base, err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return Kernel{}, fmt.Errorf("lock the kernel cache %s: %w", base, err)
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN)
	pkg, version, err := resolveKernelPackage(ctx, progress)
	if err != nil {
		if k, cerr := newestCachedKernel(base); cerr == nil {
			progress("cannot resolve %s (%v); using cached %s", KernelMeta, err, k.Package)
			return k, nil
		}
		return Kernel{}, err
	}
	root := filepath.Join(base, pkg+"_"+version)
	if k, err := loadKernel(root, pkg, version); err == nil {
		progress("kernel %s %s: cached", pkg, version)
		return k, nil
	}
	progress("kernel %s %s: apt-get download", pkg, version)
	dl := filepath.Join(base, ".download")
	if err := os.MkdirAll(dl, 0o755); err != nil {
		return Kernel{}, err
	}
	defer os.RemoveAll(dl)
	cmd := exec.CommandContext(ctx, "apt-get", "download", "-qq", pkg+"="+version)
	cmd.Dir = dl
	if out, err := cmd.CombinedOutput(); err != nil {
		return Kernel{}, fmt.Errorf("apt-get download %s=%s: %w: %s", pkg, version, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dl, pkg+"_*.deb"))
	if len(debs) != 1 {
		return Kernel{}, fmt.Errorf("apt-get download %s: expected one .deb, found %v", pkg, debs)
	}
	progress("kernel %s %s: dpkg -x", pkg, version)
	tmp := root + ".tmp"
	os.RemoveAll(tmp)
	if out, err := exec.CommandContext(ctx, "dpkg", "-x", debs[0], tmp).CombinedOutput(); err != nil {
		os.RemoveAll(tmp)
		return Kernel{}, fmt.Errorf("dpkg -x %s: %w: %s", debs[0], err, out)
	}
	// Only the kernel image and modules are needed: drop the rest (docs).
	os.RemoveAll(filepath.Join(tmp, "usr"))
	if err := os.WriteFile(filepath.Join(tmp, ".package"), []byte(pkg+" "+version+"\n"), 0o644); err != nil {
		return Kernel{}, err
	}
	os.RemoveAll(root)
	if err := os.Rename(tmp, root); err != nil {
		return Kernel{}, err
	}
	return loadKernel(root, pkg, version)
}

func loadKernel(root, pkg, version string) (Kernel, error) {
	if _, err := os.Stat(filepath.Join(root, ".package")); err != nil {
		return Kernel{}, err
	}
	imgs, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(imgs) != 1 {
		return Kernel{}, fmt.Errorf("kernel in %s: expected one boot/vmlinuz-*, found %v", root, imgs)
	}
	rel := strings.TrimPrefix(filepath.Base(imgs[0]), "vmlinuz-")
	if _, err := os.Stat(filepath.Join(root, "lib", "modules", rel)); err != nil {
		return Kernel{}, fmt.Errorf("kernel in %s: no modules for %s: %w", root, rel, err)
	}
	return Kernel{Package: pkg, Version: version, Release: rel, Root: root, Image: imgs[0]}, nil
}

func newestCachedKernel(base string) (Kernel, error) {
	ents, err := os.ReadDir(base)
	if err != nil {
		return Kernel{}, err
	}
	var names []string
	for _, e := range ents {
		if e.IsDir() && strings.Contains(e.Name(), "_") && !strings.HasPrefix(e.Name(), ".") && !strings.HasSuffix(e.Name(), ".tmp") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	for i := len(names) - 1; i >= 0; i-- {
		pkg, version, _ := strings.Cut(names[i], "_")
		if k, err := loadKernel(filepath.Join(base, names[i]), pkg, version); err == nil {
			return k, nil
		}
	}
	return Kernel{}, errors.New("no cached kernel")
}

// Module is one kernel module file and what it depends on.
type Module struct {
	Name    string
	Path    string
	Depends []string
}

// moduleIndex maps module names (dashes as underscores) to .ko files.
func moduleIndex(k Kernel) (map[string]string, error) {
	idx := map[string]string{}
	dir := filepath.Join(k.Root, "lib", "modules", k.Release, "kernel")
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".ko") {
			idx[modName(strings.TrimSuffix(d.Name(), ".ko"))] = p
		}
		return nil
	})
	return idx, err
}

func modName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// modDepends reads depends= from a module's .modinfo section (the .deb ships
// no modules.dep).
func modDepends(path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", path, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("module %s: no .modinfo section", path)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("module %s: read .modinfo: %w", path, err)
	}
	var deps []string
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok && len(v) > 0 {
			for _, d := range strings.Split(string(v), ",") {
				deps = append(deps, modName(d))
			}
		}
	}
	return deps, nil
}

// resolveModules returns the modules to load for the wanted ones, each after
// everything it depends on.
func resolveModules(k Kernel, want []string) ([]Module, error) {
	idx, err := moduleIndex(k)
	if err != nil {
		return nil, err
	}
	var order []Module
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string, from string) error
	visit = func(name, from string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle at %s", name)
		case 2:
			return nil
		}
		p, ok := idx[name]
		if !ok {
			return fmt.Errorf("module %s (needed by %s) not in kernel %s", name, from, k.Release)
		}
		state[name] = 1
		deps, err := modDepends(p)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, Module{Name: name, Path: p, Depends: deps})
		return nil
	}
	for _, w := range want {
		if err := visit(modName(w), "the ramdisk"); err != nil {
			return nil, err
		}
	}
	return order, nil
}
