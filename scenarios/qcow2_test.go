package scenarios

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ironlab/ironlab/images/qcow2"
	"github.com/ironlab/ironlab/scenarios/labtest"
)

// The qcow2 scenario deploys the image the lab serves as qcow2; every
// disk's first bytes are then what `qemu-img convert -O raw` makes of the
// served file, checked here with QEMU's own tool, independently of the
// scenario's disk_image expectation (which checks the raw image the lab
// built) and of the agent's pure-Go reader.
func TestQcow2DeployEqualsQemuImgConvert(t *testing.T) {
	qemuImg := labtest.Require(t, "qemu-img")
	res, _, state := runBuiltin(t, "qcow2", nil)
	served, err := filepath.Glob(filepath.Join(filepath.Dir(state), "images", "demo-os-*.qcow2"))
	if err != nil || len(served) != 1 {
		t.Fatalf("the served qcow2 file: %v %v", served, err)
	}
	head := make([]byte, 4)
	if f, err := os.Open(served[0]); err != nil {
		t.Fatal(err)
	} else {
		_, err = f.Read(head)
		f.Close()
		if err != nil || !qcow2.IsQcow2(head) {
			t.Fatalf("%s does not start with qcow2's magic (%q, %v)", served[0], head, err)
		}
	}
	raw := filepath.Join(t.TempDir(), "converted.raw")
	if out, err := exec.Command(qemuImg, "convert", "-f", "qcow2", "-O", "raw", served[0], raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	want, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Nodes) != 2 {
		t.Fatalf("%d nodes in the result, want 2", len(res.Nodes))
	}
	for _, n := range res.Nodes {
		disk, err := os.ReadFile(filepath.Join(state, "disks", n.Name+".raw"))
		if err != nil {
			t.Fatal(err)
		}
		if len(disk) < len(want) {
			t.Fatalf("%s: disk of %d bytes, smaller than the %d-byte image", n.Name, len(disk), len(want))
		}
		// The MBR's partition table (bytes 446-509) differs: the agent
		// adds the config drive's partition to it, as IPA does.
		got := append([]byte(nil), disk[:len(want)]...)
		copy(got[446:510], want[446:510])
		if i := firstDiff(got, want); i >= 0 {
			t.Errorf("%s: the disk differs from qemu-img convert -O raw of the served qcow2 at byte %d", n.Name, i)
		}
		if bytes.Equal(disk[446:510], want[446:510]) {
			t.Errorf("%s: the partition table is the image's: no config drive partition was added", n.Name)
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}
