package ramdisk

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// A minimal rtnetlink client: link up, add an IPv4 address, add a default
// route. Enough for the ramdisk, without a netlink dependency.

var nlSeq atomic.Uint32

// nlAttr encodes one rtattr, padded to 4 bytes.
func nlAttr(typ uint16, data []byte) []byte {
	l := 4 + len(data)
	b := make([]byte, (l+3)&^3)
	binary.NativeEndian.PutUint16(b[0:], uint16(l))
	binary.NativeEndian.PutUint16(b[2:], typ)
	copy(b[4:], data)
	return b
}

// nlMessage encodes a request with header, fixed body and attributes.
func nlMessage(typ, flags uint16, seq uint32, body []byte, attrs ...[]byte) []byte {
	n := unix.NLMSG_HDRLEN + len(body)
	for _, a := range attrs {
		n += len(a)
	}
	b := make([]byte, unix.NLMSG_HDRLEN, n)
	binary.NativeEndian.PutUint32(b[0:], uint32(n))
	binary.NativeEndian.PutUint16(b[4:], typ)
	binary.NativeEndian.PutUint16(b[6:], flags|unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(b[8:], seq)
	b = append(b, body...)
	for _, a := range attrs {
		b = append(b, a...)
	}
	return b
}

// ifInfomsg: family, pad, type, index, flags, change.
func ifInfomsg(index int32, flags, change uint32) []byte {
	b := make([]byte, unix.SizeofIfInfomsg)
	b[0] = unix.AF_UNSPEC
	binary.NativeEndian.PutUint32(b[4:], uint32(index))
	binary.NativeEndian.PutUint32(b[8:], flags)
	binary.NativeEndian.PutUint32(b[12:], change)
	return b
}

// ifAddrmsg: family, prefixlen, flags, scope, index.
func ifAddrmsg(prefix int, index int32) []byte {
	b := make([]byte, unix.SizeofIfAddrmsg)
	b[0] = unix.AF_INET
	b[1] = byte(prefix)
	b[3] = unix.RT_SCOPE_UNIVERSE
	binary.NativeEndian.PutUint32(b[4:], uint32(index))
	return b
}

// rtMsg for a unicast IPv4 route in the main table.
func rtMsg(dstLen int) []byte {
	b := make([]byte, unix.SizeofRtMsg)
	b[0] = unix.AF_INET
	b[1] = byte(dstLen)
	b[4] = unix.RT_TABLE_MAIN
	b[5] = unix.RTPROT_BOOT
	b[6] = unix.RT_SCOPE_UNIVERSE
	b[7] = unix.RTN_UNICAST
	return b
}

func u32(v uint32) []byte {
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, v)
	return b
}

// nlDo sends one request and waits for its ack.
func nlDo(msg []byte) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink bind: %w", err)
	}
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink send: %w", err)
	}
	seq := binary.NativeEndian.Uint32(msg[8:])
	buf := make([]byte, 8192)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("netlink receive: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("netlink parse: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != seq || m.Header.Type != unix.NLMSG_ERROR || len(m.Data) < 4 {
				continue
			}
			if code := int32(binary.NativeEndian.Uint32(m.Data)); code != 0 {
				return unix.Errno(-code)
			}
			return nil
		}
	}
}

// linkUp sets IFF_UP on an interface.
func linkUp(index int) error {
	return nlDo(nlMessage(unix.RTM_NEWLINK, 0, nlSeq.Add(1), ifInfomsg(int32(index), unix.IFF_UP, unix.IFF_UP)))
}

// addAddr adds an IPv4 address with prefix to an interface.
func addAddr(index int, ip net.IP, prefix int) error {
	ip4 := ip.To4()
	return nlDo(nlMessage(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, nlSeq.Add(1), ifAddrmsg(prefix, int32(index)),
		nlAttr(unix.IFA_LOCAL, ip4), nlAttr(unix.IFA_ADDRESS, ip4)))
}

// addDefaultRoute adds 0.0.0.0/0 via gw on an interface.
func addDefaultRoute(index int, gw net.IP) error {
	return nlDo(nlMessage(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, nlSeq.Add(1), rtMsg(0),
		nlAttr(unix.RTA_GATEWAY, gw.To4()), nlAttr(unix.RTA_OIF, u32(uint32(index)))))
}
