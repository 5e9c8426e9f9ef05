package fakeagent

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlab/ironlab/images/configdrive"
	"github.com/ironlab/ironlab/images/partition"
	"github.com/ironlab/ironlab/scenarios/labtest"
)

// fileServer serves blobs by name.
func fileServer(t *testing.T, files map[string][]byte) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := files[strings.TrimPrefix(r.URL.Path, "/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func sha(b []byte) string { return fmt.Sprintf("%x", sha256.Sum256(b)) }

// writeWith runs write_image with info (and configdrive) on a fresh agent
// whose disk has size bytes of 0xEE, and returns the command result and the
// disk's bytes.
func writeWith(t *testing.T, size int64, bootMode string, info map[string]any, cd any) (map[string]any, []byte, *testAgent, *scriptedIronic) {
	t.Helper()
	api := newScriptedIronic(t, 99)
	api.addNode(nodeA, true, macA)
	hw := testHardware(t, macA, size)
	if err := os.WriteFile(hw.Disks[0].Path, bytes.Repeat([]byte{0xEE}, int(size)), 0o644); err != nil {
		t.Fatal(err)
	}
	ta := startAgent(t, api, hw, func(c *Config) { c.BootMode = bootMode; c.ImageCacheDir = t.TempDir() })
	ta.waitLookedUp(t)
	step := writeImageStep(info)
	if cd != nil {
		step["step"].(map[string]any)["args"].(map[string]any)["configdrive"] = cd
	}
	res := ta.runCommand(t, api, "deploy.execute_deploy_step", step)
	disk, err := os.ReadFile(hw.Disks[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	return res, disk, ta, api
}

func mustSucceed(t *testing.T, res map[string]any) {
	t.Helper()
	if res["command_status"] != StatusSucceeded {
		t.Fatalf("status %v, error %v; want SUCCEEDED", res["command_status"], res["command_error"])
	}
}

func mustFail(t *testing.T, res map[string]any, want ...string) {
	t.Helper()
	if res["command_status"] != StatusFailed {
		t.Fatalf("status %v, want FAILED (result %v)", res["command_status"], res["command_result"])
	}
	e, _ := res["command_error"].(map[string]any)
	text := fmt.Sprint(e["message"], ": ", e["details"])
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("command_error %q does not mention %q", text, w)
		}
	}
}

func partitionUUIDs(t *testing.T, ta *testAgent, api *scriptedIronic) map[string]any {
	t.Helper()
	_, res := ta.post(t, "standby.get_partition_uuids", map[string]any{}, true, api.token(nodeA))
	m, _ := res["command_result"].(map[string]any)
	return m
}

// TestQcow2WrittenAsRaw: a qcow2 image made by qemu-img lands on the disk
// exactly as `qemu-img convert -O raw` writes it, over whatever the disk held.
func TestQcow2WrittenAsRaw(t *testing.T) {
	qemuImg := labtest.Require(t, "qemu-img")
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	raw := testImage(3 << 20)
	clear(raw[1<<20 : 2<<20]) // a zero run: unallocated in the qcow2
	if err := os.WriteFile(src, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "disk.qcow2")
	for _, args := range [][]string{
		{"convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1,cluster_size=65536", src, img},
		{"resize", "-f", "qcow2", img, "5M"}, // virtual size beyond the data: reads as zeros
		{"convert", "-f", "qcow2", "-O", "raw", img, filepath.Join(dir, "want.raw")},
	} {
		if out, err := exec.Command(qemuImg, args...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img %v: %v\n%s", args, err, out)
		}
	}
	q, _ := os.ReadFile(img)
	want, _ := os.ReadFile(filepath.Join(dir, "want.raw"))
	srv := fileServer(t, map[string][]byte{"disk.qcow2": q, "disk.raw": raw})

	for _, format := range []string{"qcow2", ""} {
		t.Run("disk_format "+strconv.Quote(format), func(t *testing.T) {
			info := map[string]any{"id": "q", "urls": []string{srv.URL + "/disk.qcow2"}, "disk_format": format, "checksum": sha(q)}
			res, disk, _, _ := writeWith(t, 8<<20, "bios", info, nil)
			mustSucceed(t, res)
			if i := firstDiff(disk[:len(want)], want); i >= 0 {
				t.Fatalf("disk byte %d = %#x, qemu-img convert -O raw gives %#x", i, disk[i], want[i])
			}
			if !bytes.Equal(disk[len(want):], bytes.Repeat([]byte{0xEE}, 8<<20-len(want))) {
				t.Error("the disk beyond the image's virtual size was written")
			}
		})
	}
	t.Run("raw declared qcow2", func(t *testing.T) {
		info := map[string]any{"id": "r", "urls": []string{srv.URL + "/disk.raw"}, "disk_format": "qcow2", "checksum": sha(raw)}
		res, _, _, _ := writeWith(t, 8<<20, "bios", info, nil)
		mustFail(t, res, "Security: Expected format was qcow2, but image was actually raw")
	})
	t.Run("qcow2 larger than the disk", func(t *testing.T) {
		info := map[string]any{"id": "q", "urls": []string{srv.URL + "/disk.qcow2"}, "disk_format": "qcow2", "checksum": sha(q)}
		res, _, _, _ := writeWith(t, 4<<20, "bios", info, nil)
		mustFail(t, res, "virtual size of 5242880 bytes, larger than")
	})
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

func testConfigDrive(t *testing.T, hostname string) (img []byte, encoded string) {
	t.Helper()
	files, err := configdrive.Files(map[string]any{"hostname": hostname, "uuid": nodeA}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if img, err = configdrive.BuildISO(files); err != nil {
		t.Fatal(err)
	}
	if encoded, err = configdrive.Encode(img); err != nil {
		t.Fatal(err)
	}
	return img, encoded
}

func readBack(t *testing.T, disk []byte) map[string]any {
	t.Helper()
	d, err := configdrive.Find(bytes.NewReader(disk), int64(len(disk)))
	if err != nil {
		t.Fatal(err)
	}
	md, err := d.MetaData()
	if err != nil {
		t.Fatal(err)
	}
	return md
}

// TestPartitionImageBIOS: an MBR with the config drive and the root
// partition (bootable) from 1 MiB on, as ironic-lib lays them out; the
// image in the root partition; get_partition_uuids as IPA reports it.
func TestPartitionImageBIOS(t *testing.T) {
	image := testImage(1 << 20)
	srv := fileServer(t, map[string][]byte{"root.img": image})
	_, cd := testConfigDrive(t, "part-node")
	info := map[string]any{"id": "root", "urls": []string{srv.URL + "/root.img"}, "disk_format": "raw", "checksum": sha(image),
		"image_type": "partition", "root_mb": 4, "swap_mb": 1, "ephemeral_mb": 0, "deploy_boot_mode": "bios", "node_uuid": nodeA}
	res, disk, ta, api := writeWith(t, 16<<20, "uefi", info, cd) // deploy_boot_mode wins over how the agent booted
	mustSucceed(t, res)
	tbl, err := partition.Read(bytes.NewReader(disk), int64(len(disk)))
	if err != nil {
		t.Fatal(err)
	}
	if tbl.Kind != partition.MBR || len(tbl.Partitions) != 3 {
		t.Fatalf("table %s with %d partitions, want msdos with swap, configdrive, root", tbl.Kind, len(tbl.Partitions))
	}
	swap, cdp, root := tbl.Partitions[0], tbl.Partitions[1], tbl.Partitions[2]
	type layout struct {
		Start, Size int64
		Type        byte
		Boot        bool
	}
	got := []layout{{swap.Start, swap.Size, swap.MBRType, swap.Bootable}, {cdp.Start, cdp.Size, cdp.MBRType, cdp.Bootable}, {root.Start, root.Size, root.MBRType, root.Bootable}}
	want := []layout{{1 << 20, 1 << 20, 0x82, false}, {2 << 20, 1 << 20, 0x83, false}, {3 << 20, 4 << 20, 0x83, true}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("partitions (-want +got):\n%s", d)
	}
	if !bytes.Equal(disk[root.Start:root.Start+int64(len(image))], image) {
		t.Error("the root partition does not hold the image")
	}
	if !bytes.Equal(disk[swap.Start+4096-10:swap.Start+4096], []byte("SWAPSPACE2")) {
		t.Error("the swap partition has no swap signature")
	}
	if md := readBack(t, disk); md["hostname"] != "part-node" {
		t.Errorf("config drive meta_data = %v", md)
	}
	uuids := partitionUUIDs(t, ta, api)
	wantRoot := fmt.Sprintf("%08x-03", tbl.DiskSignature)
	if uuids["root uuid"] != wantRoot || uuids["efi system partition uuid"] != nil {
		t.Errorf("get_partition_uuids = %v, want root uuid %s (the PARTUUID: no filesystem in the image) and no ESP", uuids, wantRoot)
	}
	if parts, _ := uuids["partitions"].(map[string]any); parts["root"] != "/dev/vda3" || parts["configdrive"] != "/dev/vda2" || parts["swap"] != "/dev/vda1" {
		t.Errorf("partitions = %v", uuids["partitions"])
	}
}

// TestPartitionImageUEFI: GPT, a 200 MiB FAT EFI system partition first,
// then the root partition; blkid agrees with what the agent reports.
func TestPartitionImageUEFI(t *testing.T) {
	image := testImage(1 << 20)
	srv := fileServer(t, map[string][]byte{"root.img": image})
	info := map[string]any{"id": "root", "urls": []string{srv.URL + "/root.img"}, "disk_format": "raw", "checksum": sha(image),
		"image_type": "partition", "root_mb": 8, "deploy_boot_mode": "uefi"}
	res, disk, ta, api := writeWith(t, 256<<20, "bios", info, nil)
	mustSucceed(t, res)
	tbl, err := partition.Read(bytes.NewReader(disk), int64(len(disk)))
	if err != nil {
		t.Fatal(err)
	}
	if tbl.Kind != partition.GPT || len(tbl.Partitions) != 2 {
		t.Fatalf("table %s with %d partitions, want gpt with ESP and root", tbl.Kind, len(tbl.Partitions))
	}
	esp, root := tbl.Partitions[0], tbl.Partitions[1]
	if esp.Type != partition.TypeESP || esp.Start != 1<<20 || esp.Size != 200<<20 || root.Start != 201<<20 || root.Size != 8<<20 || root.Name != "primary" {
		t.Errorf("ESP %+v, root %+v: want ironic-lib's layout", esp, root)
	}
	uuids := partitionUUIDs(t, ta, api)
	if uuids["root uuid"] != root.GUID.String() {
		t.Errorf("root uuid = %v, want the root PARTUUID %s", uuids["root uuid"], root.GUID)
	}
	espUUID, _ := uuids["efi system partition uuid"].(string)
	if len(espUUID) != 9 || espUUID[4] != '-' {
		t.Errorf("efi system partition uuid = %q, want a FAT volume id", espUUID)
	}
	if blkid, err := exec.LookPath("blkid"); err == nil {
		p := filepath.Join(t.TempDir(), "esp.img")
		if err := os.WriteFile(p, disk[esp.Start:esp.End()], 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(blkid, "-p", "-o", "export", p).Output()
		if err != nil {
			t.Fatalf("blkid on the ESP: %v", err)
		}
		s := string(out)
		if !strings.Contains(s, "TYPE=vfat") || !strings.Contains(s, "UUID="+espUUID) || !strings.Contains(s, "LABEL=EFI-PART") {
			t.Errorf("blkid says %q; want a vfat with UUID %s and label EFI-PART", s, espUUID)
		}
	}

	// install_bootloader finds that ESP and registers a UEFI boot entry.
	_, r := ta.post(t, "image.install_bootloader", map[string]any{"root_uuid": uuids["root uuid"], "efi_system_part_uuid": espUUID, "target_boot_mode": "uefi"}, true, api.token(nodeA))
	mustSucceed(t, r)
	if got := ta.UEFIBootEntries(); len(got) != 1 || got[0].PartUUID != esp.GUID.String() || got[0].Loader != `\EFI\BOOT\BOOTX64.EFI` {
		t.Errorf("UEFI boot entries = %+v, want one for the ESP %s", got, esp.GUID)
	}
}

// TestConfigDriveOnWholeDisk: IPA adds a 64 MiB partition at the end of the
// disk and copies the config drive into it, from the gzipped base64 string
// or from a URL; a scenario can read it back.
func TestConfigDriveOnWholeDisk(t *testing.T) {
	image := mbrImage(1 << 20) // boot code, an MBR signature and no partitions
	_, cd := testConfigDrive(t, "whole-node")
	srv := fileServer(t, map[string][]byte{"disk.img": image, "cd": []byte(cd)})
	for name, drive := range map[string]string{"inline": cd, "URL": srv.URL + "/cd"} {
		t.Run(name, func(t *testing.T) {
			info := map[string]any{"id": "disk", "urls": []string{srv.URL + "/disk.img"}, "disk_format": "raw", "checksum": sha(image)}
			res, disk, _, _ := writeWith(t, 128<<20, "bios", info, drive)
			mustSucceed(t, res)
			if !bytes.Equal(disk[:440], image[:440]) {
				t.Error("the image's boot code was changed")
			}
			tbl, err := partition.Read(bytes.NewReader(disk), int64(len(disk)))
			if err != nil {
				t.Fatal(err)
			}
			p := tbl.Partitions[len(tbl.Partitions)-1]
			if p.Start != 64<<20 || p.End() != 128<<20 || p.MBRType != 0x0c {
				t.Errorf("config drive partition %+v, want the last 64 MiB (parted mkpart primary fat32 -64MiB -0)", p)
			}
			if md := readBack(t, disk); md["hostname"] != "whole-node" {
				t.Errorf("meta_data = %v", md)
			}
		})
	}
	t.Run("image overlaps the config drive", func(t *testing.T) {
		big := mbrImage(70 << 20)
		srv := fileServer(t, map[string][]byte{"big.img": big})
		info := map[string]any{"id": "big", "urls": []string{srv.URL + "/big.img"}, "disk_format": "raw", "checksum": sha(big)}
		res, _, _, _ := writeWith(t, 128<<20, "bios", info, cd)
		mustFail(t, res, "reaches into the last 64 MiB")
	})
	t.Run("a dictionary is refused", func(t *testing.T) {
		info := map[string]any{"id": "disk", "urls": []string{srv.URL + "/disk.img"}, "disk_format": "raw", "checksum": sha(image)}
		res, _, _, _ := writeWith(t, 128<<20, "bios", info, map[string]any{"meta_data": map[string]any{}})
		mustFail(t, res, "must be a string")
	})
	t.Run("not base64 nor an image", func(t *testing.T) {
		info := map[string]any{"id": "disk", "urls": []string{srv.URL + "/disk.img"}, "disk_format": "raw", "checksum": sha(image)}
		res, _, _, _ := writeWith(t, 128<<20, "bios", info, "aGVsbG8=")
		mustFail(t, res, "not gzipped")
	})
}

// TestInstallBootloaderWithoutESP: without an EFI system partition IPA
// goes on to grub2-install into the image's root filesystem, which is not
// emulated: the command says so; but, as IPA, a root UUID of 0x00000000
// means a whole-disk image with nothing to install, and
// ignore_bootloader_failure turns the failure into a success.
func TestInstallBootloaderWithoutESP(t *testing.T) {
	image := mbrImage(1 << 20)
	srv := fileServer(t, map[string][]byte{"disk.img": image})
	info := map[string]any{"id": "disk", "urls": []string{srv.URL + "/disk.img"}, "disk_format": "raw", "checksum": sha(image)}
	res, _, ta, api := writeWith(t, 8<<20, "uefi", info, nil)
	mustSucceed(t, res)
	install := func(params map[string]any) map[string]any {
		_, r := ta.post(t, "image.install_bootloader", params, true, api.token(nodeA))
		return r
	}
	mustFail(t, install(map[string]any{"root_uuid": "0x12345678", "target_boot_mode": "uefi"}), "No EFI system partition", "/dev/vda", "GRUB")
	mustFail(t, install(map[string]any{"root_uuid": "0x12345678", "target_boot_mode": "bios"}), "GRUB")
	mustFail(t, install(map[string]any{"root_uuid": "0x12345678", "efi_system_part_uuid": "ABCD-1234", "target_boot_mode": "uefi"}), "No EFI system partition with UUID ABCD-1234")
	mustSucceed(t, install(map[string]any{"root_uuid": "0x00000000", "target_boot_mode": "uefi"}))
	mustSucceed(t, install(map[string]any{"root_uuid": "0x12345678", "target_boot_mode": "bios", "ignore_bootloader_failure": true}))
	if got := ta.UEFIBootEntries(); len(got) != 0 {
		t.Errorf("UEFI boot entries %+v registered without an ESP", got)
	}
}

// mbrImage is a whole-disk image with boot code and an empty MBR partition
// table, like the lab's test images.
func mbrImage(size int) []byte {
	b := testImage(size)
	clear(b[446:510])
	b[510], b[511] = 0x55, 0xaa
	return b
}
