package images

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// needTool skips when a tool of the VM tier is missing, but fails under CI,
// where scripts/vm-deps.sh must have installed it.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not installed; scripts/vm-deps.sh should have installed it", name)
		}
		t.Skipf("VM tier: %s not installed (run scripts/vm-deps.sh as root)", name)
	}
	return p
}

// TestBootSectorPrintsMarkerInQEMU boots a built test image as the only disk
// of a QEMU (TCG) machine and reads the marker from its serial console.
func TestBootSectorPrintsMarkerInQEMU(t *testing.T) {
	qemu := needTool(t, "qemu-system-x86_64")
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
