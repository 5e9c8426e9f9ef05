package fake

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ironlab/ironlab/simulator"
)

// isoRecord is one ISO 9660 directory record.
func isoRecord(name string, lba, size uint32, dir bool) []byte {
	n := 33 + len(name)
	if n%2 == 1 {
		n++
	}
	r := make([]byte, n)
	r[0] = byte(n)
	binary.LittleEndian.PutUint32(r[2:], lba)
	binary.BigEndian.PutUint32(r[6:], lba)
	binary.LittleEndian.PutUint32(r[10:], size)
	binary.BigEndian.PutUint32(r[14:], size)
	if dir {
		r[25] = 2
	}
	r[32] = byte(len(name))
	copy(r[33:], name)
	return r
}

// makeISO writes a minimal ISO 9660 image holding one boot loader
// configuration at dir/file (upper-case 8.3 names, as mkisofs writes them).
func makeISO(dir, file, cfg string) []byte {
	img := make([]byte, 21*isoSector)
	pvd := img[16*isoSector:]
	pvd[0] = 1
	copy(pvd[1:], "CD001")
	copy(pvd[156:], isoRecord("\x00", 18, isoSector, true))
	term := img[17*isoSector:]
	term[0] = 255
	copy(term[1:], "CD001")
	root := bytes.Join([][]byte{isoRecord("\x00", 18, isoSector, true), isoRecord("\x01", 18, isoSector, true), isoRecord(strings.ToUpper(dir), 19, isoSector, true)}, nil)
	copy(img[18*isoSector:], root)
	sub := bytes.Join([][]byte{isoRecord("\x00", 19, isoSector, true), isoRecord("\x01", 18, isoSector, true), isoRecord(strings.ToUpper(file)+";1", 20, uint32(len(cfg)), false)}, nil)
	copy(img[19*isoSector:], sub)
	copy(img[20*isoSector:], cfg)
	return img
}

func TestISOCmdline(t *testing.T) {
	isolinux := "default boot\nlabel boot\nkernel /vmlinuz\nappend initrd=/initrd text ipa-api-url=http://127.0.0.1:6385 ipa-agent-token=abc --\n"
	got, err := isoCmdline(bytes.NewReader(makeISO("isolinux", "isolinux.cfg", isolinux)))
	if err != nil || got != "initrd=/initrd text ipa-api-url=http://127.0.0.1:6385 ipa-agent-token=abc --" {
		t.Fatalf("isolinux: %q, %v", got, err)
	}
	if _, err := isoCmdline(bytes.NewReader([]byte("not an iso"))); err == nil {
		t.Fatal("a text file gave a command line")
	}
	if _, err := isoCmdline(bytes.NewReader(makeISO("isolinux", "other.cfg", isolinux))); err == nil {
		t.Fatal("an ISO without a boot loader configuration gave a command line")
	}
	// A directory record pointing past the image is an error, not a panic.
	bad := makeISO("isolinux", "isolinux.cfg", isolinux)
	binary.LittleEndian.PutUint32(bad[18*isoSector+34+34+2:], 1<<30)
	if _, err := isoCmdline(bytes.NewReader(bad)); err == nil {
		t.Fatal("a corrupt directory gave a command line")
	}
}

func FuzzISOCmdline(f *testing.F) {
	f.Add(makeISOForFuzz())
	f.Add([]byte("CD001"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = isoCmdline(bytes.NewReader(b)) // must not panic
	})
}

func makeISOForFuzz() []byte {
	return makeISO("isolinux", "isolinux.cfg", "append ipa-api-url=http://127.0.0.1:1\n")
}

type cdBoot struct {
	countingBoot
	cmdlines chan string
}

func (c *cdBoot) CDBoot(ctx context.Context, m simulator.Machine, cmdline string) error {
	c.cmdlines <- cmdline
	<-ctx.Done()
	return nil
}

// An ISO's boot loader command line reaches a CDBooter and the console.
func TestCDBootPassesTheISOCommandLine(t *testing.T) {
	iso := makeISO("isolinux", "isolinux.cfg", "append initrd=/initrd ipa-agent-token=t0k --\n")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(iso) }))
	defer srv.Close()
	nb := &cdBoot{cmdlines: make(chan string, 1)}
	m := newMachine(t, nb)
	ctx := context.Background()
	m.InsertMedia(ctx, srv.URL+"/boot.iso")
	m.SetBootConfig(ctx, simulator.BootConfig{Device: simulator.BootCD})
	m.SetPower(ctx, simulator.ActionOn)
	select {
	case got := <-nb.cmdlines:
		if got != "initrd=/initrd ipa-agent-token=t0k --" {
			t.Fatalf("CDBoot got %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no CD boot in 10s")
	}
	if log, _ := m.ConsoleLog(); !strings.Contains(log, "virtual CD: kernel command line: initrd=/initrd ipa-agent-token=t0k --") {
		t.Fatalf("console %q", log)
	}
	if nb.boots.Load() != 0 {
		t.Fatal("a CD with a command line ran NetBoot")
	}
}
