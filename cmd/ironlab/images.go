package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ironlab/ironlab/images"
	"github.com/ironlab/ironlab/images/ramdisk"
)

func init() {
	register("images", "build the agent ramdisk and test disk images (cached)", runImages)
}

func runImages(args []string) int {
	if len(args) == 0 || args[0] != "build" {
		fmt.Fprintf(os.Stderr, "Usage: ironlab images build [flags]\n\nRun 'ironlab images build --help' for its flags.\n")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			return 0
		}
		return 2
	}
	fs := flag.NewFlagSet("images build", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: ironlab images build [flags] [IMAGE-ID...]

Builds the agent ramdisk for the libvirt backend: Debian's cloud kernel
(apt-get download + dpkg -x into the cache, never installed on the host) and a
gzip newc initramfs holding this static binary as /init and the virtio modules.
With image ids, also builds those test disk images. Everything is cached and
rebuilt only when its inputs change.

Flags:
`)
		fs.PrintDefaults()
	}
	cache := fs.String("cache-dir", ramdiskCache(), "cache folder for the kernel, ramdisk and images (env IRONLAB_CACHE)")
	binary := fs.String("binary", "", "static ironlab binary to use as /init (default: this binary if static, else go build ./cmd/ironlab)")
	size := fs.Int64("image-size", images.DefaultSize, "size in bytes of the test disk images named as arguments")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	quiet := fs.Bool("quiet", false, "no progress output")
	if code, ok := parseFlags(fs, args[1:]); !ok {
		return code
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o := ramdisk.Options{CacheDir: *cache, Binary: *binary, Progress: os.Stderr}
	if *quiet {
		o.Progress = nil
	}
	r, err := ramdisk.Build(ctx, o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ironlab images build: %v\n", err)
		return 1
	}
	result := struct {
		Ramdisk ramdisk.Ramdisk `json:"ramdisk"`
		Images  []images.Info   `json:"images,omitempty"`
	}{Ramdisk: r}
	for _, id := range fs.Args() {
		p := fmt.Sprintf("%s/images/%s.raw", *cache, id)
		if !*quiet {
			fmt.Fprintf(os.Stderr, "images: test image %s (%d bytes) -> %s\n", id, *size, p)
		}
		info, err := images.BuildFile(p, images.Spec{ID: id, Size: *size})
		if err != nil {
			fmt.Fprintf(os.Stderr, "ironlab images build: %v\n", err)
			return 1
		}
		result.Images = append(result.Images, info)
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(result)
		return 0
	}
	fmt.Printf("kernel  %s (%s %s)\ninitrd  %s (modules: %v)\n", r.Kernel, r.KernelPackage, r.KernelVersion, r.Initrd, r.Modules)
	for _, i := range result.Images {
		fmt.Printf("image   %s  %s\n", i.ID, i.Marker())
	}
	return 0
}
