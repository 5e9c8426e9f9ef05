package bmc

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ironlab/ironlab/scenarios/labtest"
	"github.com/ironlab/ironlab/simulator/bmc/bmctest"
)

// seedPackets are hand-made starting points; testdata/fuzz holds real
// ipmitool sessions captured by TestCaptureFuzzCorpus.
var seedPackets = [][]byte{
	asfPing(7),
	getAuthCaps(),
	{0x06, 0x00, 0xff, 0x07, 0x06, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0x00},
	{0x06, 0x00, 0xff, 0x07, 0x06, 0x00, 1, 2, 3, 4, 1, 0, 0, 0, 0x07, 0x00, 0x20, 0x18, 0xc8, 0x81, 0x04, 0x01, 0x7a},
	{0x06},
	{},
}

func asfPing(tag byte) []byte {
	return []byte{0x06, 0x00, 0xff, 0x06, 0x00, 0x00, 0x11, 0xbe, 0x80, tag, 0x00, 0x00}
}

// getAuthCaps is a sessionless IPMI 1.5 Get Channel Authentication
// Capabilities request (channel E, administrator, v2.0 data wanted).
func getAuthCaps() []byte {
	msg := []byte{0x20, 0x18, 0xc8, 0x81, 0x04, 0x38, 0x8e, 0x04}
	msg = append(msg, -sum(msg[3:]))
	pkt := []byte{0x06, 0x00, 0xff, 0x07, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, byte(len(msg))}
	return append(pkt, msg...)
}

func FuzzDecodePacket(f *testing.F) {
	for _, p := range seedPackets {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := decodePacket(b)
		if err != nil {
			return
		}
		// What passes must be what the IPMI stack may trust.
		if len(h.Payload) > len(b) {
			t.Fatalf("payload of %d bytes from a %d-byte packet", len(h.Payload), len(b))
		}
		switch h.Kind {
		case kindIPMIv15:
			if checkIPMIRequest(h.Payload) != nil {
				t.Fatal("1.5 packet with a bad IPMI message passed")
			}
		case kindRMCPPlus:
			if h.PayloadType == payloadIPMI && !h.Encrypted && checkIPMIRequest(h.Payload) != nil {
				t.Fatal("RMCP+ packet with a bad IPMI message passed")
			}
		}
	})
}

// FuzzBMC throws each input at a live BMC and then checks it still answers
// an ASF ping and Get Channel Authentication Capabilities: hostile packets
// must neither crash nor wedge it.
func FuzzBMC(f *testing.F) {
	for _, p := range seedPackets {
		f.Add(p)
	}
	b := startBMC(f, bmctest.New("fuzz"), Options{MaxSessions: 4, ControlWait: 10 * time.Millisecond})
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(b.Addr()))
	if err != nil {
		f.Fatal(err)
	}
	defer conn.Close()
	var mu sync.Mutex
	tag := byte(0)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		mu.Lock()
		defer mu.Unlock()
		if _, err := conn.Write(pkt); err != nil {
			t.Skip("unsendable:", err)
		}
		tag++
		alive(t, conn, asfPing(tag), func(r []byte) bool { return len(r) >= 10 && r[8] == 0x40 && r[9] == tag })
		alive(t, conn, getAuthCaps(), func(r []byte) bool { return len(r) > 20 && r[19] == 0x38 && r[20] == 0x00 })
	})
}

// alive sends req and waits for an answer ok accepts, skipping stray answers
// to earlier inputs.
func alive(t *testing.T, conn *net.UDPConn, req []byte, ok func([]byte) bool) {
	t.Helper()
	buf := make([]byte, 512)
	for try := 0; try < 3; try++ {
		if _, err := conn.Write(req); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(time.Second)
		for {
			conn.SetReadDeadline(deadline)
			n, err := conn.Read(buf)
			if err != nil {
				break
			}
			if ok(buf[:n]) {
				return
			}
		}
	}
	t.Fatalf("BMC stopped answering % x", req)
}

// TestCaptureFuzzCorpus records what ipmitool sends in real lan and lanplus
// sessions into testdata/fuzz. Run it by hand with IRONLAB_CAPTURE_FUZZ=1.
func TestCaptureFuzzCorpus(t *testing.T) {
	if os.Getenv("IRONLAB_CAPTURE_FUZZ") != "1" {
		t.Skip("set IRONLAB_CAPTURE_FUZZ=1 to re-capture the fuzz corpus")
	}
	path := labtest.Require(t, "ipmitool")
	b := startBMC(t, bmctest.New("capture"), Options{})
	proxy, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	up, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(b.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		captured [][]byte
		client   *net.UDPAddr
	)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, a, err := proxy.ReadFromUDP(buf)
			if err != nil {
				return
			}
			mu.Lock()
			client = a
			captured = append(captured, append([]byte(nil), buf[:n]...))
			mu.Unlock()
			up.Write(buf[:n])
		}
	}()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, err := up.Read(buf)
			if err != nil {
				return
			}
			mu.Lock()
			c := client
			mu.Unlock()
			proxy.WriteToUDP(buf[:n], c)
		}
	}()
	port := strconv.Itoa(proxy.LocalAddr().(*net.UDPAddr).Port)
	for _, iface := range [][]string{{"-I", "lanplus", "-C", "3"}, {"-I", "lanplus", "-C", "17"}, {"-I", "lanplus"}, {"-I", "lan"}} {
		for _, cmd := range [][]string{{"power", "on"}, {"chassis", "bootdev", "pxe", "options=persistent,efiboot"}, {"chassis", "bootparam", "get", "5"}} {
			args := append(append([]string{}, iface...), "-H", "127.0.0.1", "-p", port, "-U", "admin", "-P", "password", "-L", "ADMINISTRATOR")
			if out, err := exec.Command(path, append(args, cmd...)...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %v\n%s", cmd, err, out)
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, target := range []string{"FuzzDecodePacket", "FuzzBMC"} {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, p := range captured {
			name := fmt.Sprintf("ipmitool-%03d", i)
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", p)
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("captured %d packets", len(captured))
}
