package images

// bootCode is the x86 real-mode code at the start of sector 0. Until the VM
// backend needs a bootable image it is empty; the header alone identifies it.
var bootCode = []byte{}
