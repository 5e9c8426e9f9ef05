package images

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/arch/x86/x86asm"
)

// TestBootCodeDecodes disassembles the hand-assembled boot code in 16-bit mode
// and compares it with the program its comments describe, jump targets included.
func TestBootCodeDecodes(t *testing.T) {
	want := []string{
		"0x00 cli",
		"0x01 xor ax, ax",
		"0x03 mov ds, ax",
		"0x05 mov ss, ax",
		"0x07 mov sp, 0x7c00",
		"0x0a cld",
		"0x0b mov dx, 0x3f9",
		"0x0e out dx, al",
		"0x0f mov dx, 0x3fb",
		"0x12 mov al, 0x80",
		"0x14 out dx, al",
		"0x15 mov dx, 0x3f8",
		"0x18 mov al, 0x1",
		"0x1a out dx, al",
		"0x1b inc dx",
		"0x1c xor al, al",
		"0x1e out dx, al",
		"0x1f mov dx, 0x3fb",
		"0x22 mov al, 0x3",
		"0x24 out dx, al",
		"0x25 dec dx",
		"0x26 mov al, 0xc7",
		"0x28 out dx, al",
		"0x29 mov dx, 0x3fc",
		"0x2c mov al, 0x3",
		"0x2e out dx, al",
		"0x2f mov si, 0x7d00",
		"0x32 lodsb byte ptr [si]",
		"0x33 test al, al",
		"0x35 jz 0x49",
		"0x37 mov ah, al",
		"0x39 mov dx, 0x3fd",
		"0x3c in al, dx",
		"0x3d test al, 0x20",
		"0x3f jz 0x3c",
		"0x41 mov al, ah",
		"0x43 mov dx, 0x3f8",
		"0x46 out dx, al",
		"0x47 jmp 0x32",
		"0x49 cli",
		"0x4a hlt",
		"0x4b jmp 0x49",
	}
	var got []string
	for pc := 0; pc < len(bootCode); {
		inst, err := x86asm.Decode(bootCode[pc:], 16)
		if err != nil {
			t.Fatalf("decode at %#x: %v", pc, err)
		}
		got = append(got, decoded(pc, inst))
		pc += inst.Len
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("boot code (-want +got):\n%s", diff)
	}
	if len(bootCode) > msgOff {
		t.Errorf("boot code is %d bytes, overlaps the marker at %#x", len(bootCode), msgOff)
	}
}

// TestBootCodeReadsMarker checks the address the code prints from is where
// FirstSector puts the marker once the BIOS loads the sector at 0x7C00.
func TestBootCodeReadsMarker(t *testing.T) {
	const loadAddr = 0x7C00
	si := int(bootCode[0x30]) | int(bootCode[0x31])<<8
	if si != loadAddr+msgOff {
		t.Fatalf("mov si, %#x; the marker is at %#x", si, loadAddr+msgOff)
	}
	s := FirstSector(Info{ID: "m", Size: 4096, PayloadSHA256: "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"})
	line := s[msgOff:]
	n := 0
	for line[n] != 0 {
		n++
	}
	if got, want := string(line[:n]), "IRONLAB-IMAGE m 001122334455\r\n"; got != want {
		t.Errorf("NUL-terminated line at %#x = %q, want %q", msgOff, got, want)
	}
}

// decoded renders one instruction in Intel syntax with absolute jump targets.
func decoded(pc int, inst x86asm.Inst) string {
	s := x86asm.IntelSyntax(inst, uint64(pc), nil)
	return fmt.Sprintf("%#02x %s", pc, s)
}
