package configdrive

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/ironlab/ironlab/driver/deploy/agent"
	"github.com/ironlab/ironlab/images/partition"
	"github.com/ironlab/ironlab/scenarios/labtest"
)

// memDisk is a disk in memory.
type memDisk []byte

func (m memDisk) ReadAt(p []byte, off int64) (int, error)  { return copy(p, m[off:]), nil }
func (m memDisk) WriteAt(p []byte, off int64) (int, error) { return copy(m[off:], p), nil }

// onDisk puts img in a GPT partition at the end of a 16 MiB disk.
func onDisk(t *testing.T, img []byte) memDisk {
	t.Helper()
	const size = 16 << 20
	d := make(memDisk, size)
	start := partition.LastUsable(size) - 8<<20
	tbl := partition.Table{Kind: partition.GPT, DiskGUID: uuid.New(), Partitions: []partition.Partition{
		{Number: 1, Start: 1 << 20, Size: 2 << 20, Type: partition.TypeLinux, GUID: uuid.New()},
		{Number: 2, Start: start, Size: 8 << 20, Type: partition.TypeLinux, GUID: uuid.New()},
	}}
	if err := partition.Write(d, size, tbl); err != nil {
		t.Fatal(err)
	}
	copy(d[start:], img)
	return d
}

func TestBuildReadBack(t *testing.T) {
	md := map[string]any{"hostname": "node-7.example", "uuid": "u-1", "public_keys": map[string]any{"k": "ssh-ed25519 AAAA"}}
	files, err := Files(md, []byte("#cloud-config\n"), map[string]any{"links": []any{}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	img, err := BuildISO(files)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := Encode(img)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := Decode([]byte(enc))
	if err != nil || !bytes.Equal(dec, img) {
		t.Fatalf("Decode(Encode(img)) = %d bytes, %v", len(dec), err)
	}
	drive, err := Find(onDisk(t, img), 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	if drive.Partition.Number != 2 {
		t.Errorf("config drive found on partition %d, want 2", drive.Partition.Number)
	}
	got, err := drive.MetaData()
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(md, got); d != "" {
		t.Errorf("meta_data (-want +got):\n%s", d)
	}
	ud, err := drive.ISO.ReadFile("openstack/2012-08-10/user_data")
	if err != nil || string(ud) != "#cloud-config\n" {
		t.Errorf("user_data = %q, %v", ud, err)
	}
	if _, err := drive.ISO.ReadFile("openstack/latest/nope.json"); err == nil {
		t.Error("a missing file was read")
	}
}

// TestOpenstacksdkConfigDrive reads a config drive built by the code Ironic
// and metalsmith use (openstacksdk's configdrive.build, with genisoimage).
func TestOpenstacksdkConfigDrive(t *testing.T) {
	py := labtest.Require(t, "/usr/bin/python3")
	labtest.Require(t, "genisoimage")
	script := `import sys, openstack.baremetal.configdrive as c
sys.stdout.write(c.build({"hostname": "sdk-node", "uuid": "u-2"}, user_data=b"hello", network_data={"links": []}))`
	out, err := exec.Command(py, "-c", script).Output()
	if err != nil {
		t.Fatalf("openstacksdk configdrive.build: %v", err)
	}
	img, err := Decode(out)
	if err != nil {
		t.Fatal(err)
	}
	iso, err := OpenISO(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	if iso.Label() != Label {
		t.Errorf("label = %q, want %q", iso.Label(), Label)
	}
	drive, err := Find(onDisk(t, img), 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	md, err := drive.MetaData()
	if err != nil {
		t.Fatal(err)
	}
	if md["hostname"] != "sdk-node" {
		t.Errorf("meta_data = %v", md)
	}
	if ud, err := drive.ISO.ReadFile("openstack/latest/user_data"); err != nil || string(ud) != "hello" {
		t.Errorf("user_data = %q, %v", ud, err)
	}
}

// TestBuildISOReadByPycdlib: what our driver builds is an ISO that pycdlib
// (Ironic's own ISO library) reads, labelled config-2, in both trees.
func TestBuildISOReadByPycdlib(t *testing.T) {
	py := labtest.Require(t, "/usr/bin/python3")
	files, _ := Files(map[string]any{"hostname": "built-here"}, nil, nil, nil)
	for name, build := range map[string]func(map[string][]byte) ([]byte, error){"lab": BuildISO, "driver": agent.ConfigDriveISO} {
		t.Run(name, func(t *testing.T) {
			img, err := build(files)
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(t.TempDir(), "cd.iso")
			if err := os.WriteFile(p, img, 0o644); err != nil {
				t.Fatal(err)
			}
			script := `import sys, io, pycdlib
iso = pycdlib.PyCdlib(); iso.open(sys.argv[1])
print(iso.pvd.volume_identifier.decode().strip())
for kw in ({"joliet_path": "/openstack/latest/meta_data.json"}, {"iso_path": "/openstack/latest/meta_data.json;1"}):
    b = io.BytesIO(); iso.get_file_from_iso_fp(b, **kw); print(b.getvalue().decode())`
			out, err := exec.Command(py, "-c", script, p).CombinedOutput()
			if err != nil {
				t.Fatalf("pycdlib could not read the ISO: %v\n%s", err, out)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			want := []string{"config-2", `{"hostname":"built-here"}`, `{"hostname":"built-here"}`}
			if d := cmp.Diff(want, lines); d != "" {
				t.Errorf("pycdlib read (-want +got):\n%s", d)
			}
		})
	}
}

func TestDecodeRefusesClearly(t *testing.T) {
	if _, err := Decode([]byte("aGVsbG8=")); err == nil || !strings.Contains(err.Error(), "gzip") {
		t.Errorf("base64 but not gzip: err = %v", err)
	}
	if _, err := Decode(nil); err == nil {
		t.Error("empty config drive accepted")
	}
	if b, err := Decode([]byte("\x00binary iso")); err != nil || string(b) != "\x00binary iso" {
		t.Errorf("binary content: %q, %v; IPA takes non-base64 content as the image", b, err)
	}
	if _, err := Find(make(memDisk, 1<<20), 1<<20); err == nil {
		t.Error("found a config drive on an empty disk")
	}
}

// TestReadsWhatTheDriverBuilds: the contract between the conductor's
// builder (driver/deploy/agent, which links no lab code) and this reader.
func TestReadsWhatTheDriverBuilds(t *testing.T) {
	files, err := Files(map[string]any{"hostname": "from-the-driver", "n": 3.0}, []byte("ud"), nil, map[string]any{"v": 1.0})
	if err != nil {
		t.Fatal(err)
	}
	img, err := agent.ConfigDriveISO(files)
	if err != nil {
		t.Fatal(err)
	}
	drive, err := Find(onDisk(t, img), 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	md, err := drive.MetaData()
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(map[string]any{"hostname": "from-the-driver", "n": 3.0}, md); d != "" {
		t.Errorf("meta_data (-want +got):\n%s", d)
	}
	for p, want := range files {
		if got, err := drive.ISO.ReadFile(p); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s = %q, %v; want %q", p, got, err, want)
		}
	}
}
