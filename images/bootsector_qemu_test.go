package images

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ironlab/ironlab/scenarios/labtest"
)

// TestBootSectorPrintsMarkerInQEMU boots a built test image as the only disk
// of a QEMU (TCG) machine and reads the marker from its serial console.
func TestBootSectorPrintsMarkerInQEMU(t *testing.T) {
	qemu := labtest.Require(t, "qemu-system-x86_64")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.raw")
	info, err := BuildFile(img, Spec{ID: "qemu-boot", Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	serial := filepath.Join(dir, "serial.log")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu,
		"-machine", "pc,accel=tcg", "-m", "32", "-nodefaults", "-no-user-config",
		"-display", "none", "-monitor", "none",
		"-serial", "file:"+serial,
		"-drive", "file="+img+",format=raw,if=ide,index=0,media=disk",
		"-boot", "c", "-net", "none")
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	want := info.Marker() + "\r\n"
	for {
		b, _ := os.ReadFile(serial)
		if strings.Contains(string(b), want) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no marker %q on the serial console; got %q; qemu said %q", want, b, out.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
