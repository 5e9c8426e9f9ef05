package bmc

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/ironlab/ironlab/simulator"
)

// Addressing is how a fleet's BMCs share loopback.
type Addressing string

const (
	// AddressingPort gives BMC i the port BasePort+i on one address
	// (default 127.0.0.1:6230+i).
	AddressingPort Addressing = "port"
	// AddressingIP gives BMC i its own loopback address on one port
	// (default 127.0.0.2+i:623), for tools that assume one BMC per IP. On
	// Linux all of 127.0.0.0/8 reaches lo; addresses ending in .0 or .255
	// are skipped.
	AddressingIP Addressing = "ip"
)

// FleetOptions place and configure a fleet's BMCs.
type FleetOptions struct {
	Addressing Addressing `json:"addressing" yaml:"addressing"` // default "port"
	// Host is the address of every BMC (port mode, default 127.0.0.1) or
	// of the first one (ip mode, default 127.0.0.2).
	Host string `json:"host" yaml:"host"`
	// Port is the first BMC's port (port mode, default 6230) or every
	// BMC's port (ip mode, default 623).
	Port int `json:"port" yaml:"port"`
	// Credentials are per node, by index; a missing or empty entry gets
	// BMC.Credentials, else DefaultCredentials.
	Credentials []Credentials `json:"credentials,omitempty" yaml:"credentials,omitempty"`
	// BMC is the template for every BMC.
	BMC Options `json:"-" yaml:"-"`
}

func (o FleetOptions) withDefaults() FleetOptions {
	if o.Addressing == "" {
		o.Addressing = AddressingPort
	}
	switch o.Addressing {
	case AddressingIP:
		if o.Host == "" {
			o.Host = "127.0.0.2"
		}
		if o.Port == 0 {
			o.Port = 623
		}
	default:
		if o.Host == "" {
			o.Host = "127.0.0.1"
		}
		if o.Port == 0 {
			o.Port = 6230
		}
	}
	return o
}

// FleetAddr is where BMC i of a fleet with these options listens. It is a pure
// function of the options and i, so a lab can write node files before
// starting the BMCs and get the same addresses on every run.
func FleetAddr(opts FleetOptions, i int) (netip.AddrPort, error) {
	o := opts.withDefaults()
	host, err := netip.ParseAddr(o.Host)
	if err != nil || !host.Is4() || !host.IsLoopback() {
		return netip.AddrPort{}, fmt.Errorf("BMC host %q: want an IPv4 loopback address", o.Host)
	}
	if i < 0 {
		return netip.AddrPort{}, fmt.Errorf("BMC index %d", i)
	}
	switch o.Addressing {
	case AddressingPort:
		p := o.Port + i
		if o.Port <= 0 || p > 65535 {
			return netip.AddrPort{}, fmt.Errorf("BMC %d: port %d+%d out of range", i, o.Port, i)
		}
		return netip.AddrPortFrom(host, uint16(p)), nil
	case AddressingIP:
		if o.Port <= 0 || o.Port > 65535 {
			return netip.AddrPort{}, fmt.Errorf("BMC port %d out of range", o.Port)
		}
		b := host.As4()
		base := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		last := base & 0xff
		if last == 0 || last == 255 {
			return netip.AddrPort{}, fmt.Errorf("BMC host %s: last octet must be 1..254", o.Host)
		}
		pos := uint64(last-1) + uint64(i)
		a := uint64(base&^0xff) + pos/254*256 + pos%254 + 1
		if a>>24 != 127 {
			return netip.AddrPort{}, fmt.Errorf("BMC %d: address beyond 127.0.0.0/8 from %s", i, o.Host)
		}
		ip := netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)})
		return netip.AddrPortFrom(ip, uint16(o.Port)), nil
	default:
		return netip.AddrPort{}, fmt.Errorf("BMC addressing %q: want port or ip", o.Addressing)
	}
}

// Fleet is the BMCs of a lab, BMC i in front of machine i.
type Fleet struct {
	bmcs []*BMC
}

// NewFleet binds one BMC per machine. On error none stays bound.
func NewFleet(machines []simulator.Machine, opts FleetOptions) (*Fleet, error) {
	f := &Fleet{}
	for i, m := range machines {
		addr, err := FleetAddr(opts, i)
		if err != nil {
			f.Close()
			return nil, err
		}
		bo := opts.BMC
		if i < len(opts.Credentials) && opts.Credentials[i] != (Credentials{}) {
			bo.Credentials = opts.Credentials[i]
		}
		b, err := New(m, addr.String(), bo)
		if err != nil {
			f.Close()
			return nil, err
		}
		f.bmcs = append(f.bmcs, b)
	}
	return f, nil
}

// Start serves every BMC until ctx ends or Close is called.
func (f *Fleet) Start(ctx context.Context) {
	for _, b := range f.bmcs {
		b.Start(ctx)
	}
}

// Len is the number of BMCs.
func (f *Fleet) Len() int { return len(f.bmcs) }

// BMC is BMC i, for its faults and credentials.
func (f *Fleet) BMC(i int) *BMC { return f.bmcs[i] }

// Addr is where BMC i listens.
func (f *Fleet) Addr(i int) netip.AddrPort { return f.bmcs[i].Addr() }

// Close stops every BMC.
func (f *Fleet) Close() error {
	var errs []error
	for _, b := range f.bmcs {
		if err := b.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
