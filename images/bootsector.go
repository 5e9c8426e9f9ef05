package images

// bootCode is the x86 real-mode code at the start of sector 0. The BIOS loads
// the sector at 0x0000:0x7C00 and jumps to it; the code sets up COM1 (0x3F8,
// 115200 8N1), prints the NUL-terminated marker line at 0x7C00+msgOff byte by
// byte, polling the line status register before each one, and halts for good.
// So "the node booted the image we deployed" shows on its serial console.
//
// Hand assembled (no assembler in the build); TestBootCodeDecodes checks the
// bytes decode to exactly these instructions, and the VM tier runs them.
var bootCode = []byte{
	/* 0x00 */ 0xFA, //             cli                 ; no interrupts: we never need them
	/* 0x01 */ 0x31, 0xC0, //       xor ax, ax
	/* 0x03 */ 0x8E, 0xD8, //       mov ds, ax          ; DS=0: data at absolute 0x7Cxx
	/* 0x05 */ 0x8E, 0xD0, //       mov ss, ax
	/* 0x07 */ 0xBC, 0x00, 0x7C, // mov sp, 0x7C00      ; stack just below the sector
	/* 0x0A */ 0xFC, //             cld                 ; lodsb counts up
	/* 0x0B */ 0xBA, 0xF9, 0x03, // mov dx, 0x3F9       ; COM1 IER
	/* 0x0E */ 0xEE, //             out dx, al          ; AL=0: UART interrupts off
	/* 0x0F */ 0xBA, 0xFB, 0x03, // mov dx, 0x3FB       ; COM1 LCR
	/* 0x12 */ 0xB0, 0x80, //       mov al, 0x80
	/* 0x14 */ 0xEE, //             out dx, al          ; DLAB=1: divisor latch access
	/* 0x15 */ 0xBA, 0xF8, 0x03, // mov dx, 0x3F8       ; DLL
	/* 0x18 */ 0xB0, 0x01, //       mov al, 0x01
	/* 0x1A */ 0xEE, //             out dx, al          ; divisor 1: 115200 baud
	/* 0x1B */ 0x42, //             inc dx              ; DLM (0x3F9)
	/* 0x1C */ 0x30, 0xC0, //       xor al, al
	/* 0x1E */ 0xEE, //             out dx, al          ; divisor high byte 0
	/* 0x1F */ 0xBA, 0xFB, 0x03, // mov dx, 0x3FB       ; LCR
	/* 0x22 */ 0xB0, 0x03, //       mov al, 0x03
	/* 0x24 */ 0xEE, //             out dx, al          ; 8N1, DLAB=0
	/* 0x25 */ 0x4A, //             dec dx              ; FCR (0x3FA)
	/* 0x26 */ 0xB0, 0xC7, //       mov al, 0xC7
	/* 0x28 */ 0xEE, //             out dx, al          ; FIFO on, both cleared
	/* 0x29 */ 0xBA, 0xFC, 0x03, // mov dx, 0x3FC       ; MCR
	/* 0x2C */ 0xB0, 0x03, //       mov al, 0x03
	/* 0x2E */ 0xEE, //             out dx, al          ; DTR+RTS
	/* 0x2F */ 0xBE, 0x00, 0x7D, // mov si, 0x7D00      ; the marker line (0x7C00+msgOff)
	// next:
	/* 0x32 */ 0xAC, //             lodsb               ; AL = [DS:SI++]
	/* 0x33 */ 0x84, 0xC0, //       test al, al
	/* 0x35 */ 0x74, 0x12, //       jz done (0x49)      ; NUL ends the line
	/* 0x37 */ 0x88, 0xC4, //       mov ah, al          ; keep the byte while polling
	/* 0x39 */ 0xBA, 0xFD, 0x03, // mov dx, 0x3FD       ; LSR
	// wait:
	/* 0x3C */ 0xEC, //             in al, dx
	/* 0x3D */ 0xA8, 0x20, //       test al, 0x20       ; THR empty?
	/* 0x3F */ 0x74, 0xFB, //       jz wait (0x3C)
	/* 0x41 */ 0x88, 0xE0, //       mov al, ah
	/* 0x43 */ 0xBA, 0xF8, 0x03, // mov dx, 0x3F8       ; THR
	/* 0x46 */ 0xEE, //             out dx, al          ; send the byte
	/* 0x47 */ 0xEB, 0xE9, //       jmp next (0x32)
	// done:
	/* 0x49 */ 0xFA, //             cli
	/* 0x4A */ 0xF4, //             hlt
	/* 0x4B */ 0xEB, 0xFC, //       jmp done (0x49)     ; an NMI wakes hlt: halt again
}
