// Package libvirtvm is the libvirt backend of simulator.Machine: every node is
// a real QEMU guest (TCG, or KVM where it works) defined in libvirt through
// go-libvirt, with QEMU user-mode networking only (see DESIGN.md's network
// rule). A Fleet owns a lab's domains; a Machine is one domain. The same
// Machine also fronts domains the user already has (`ironlab bmc`).
package libvirtvm

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
)

// DefaultURI is the libvirt URI used when none is given.
const DefaultURI = "qemu:///system"

// Sockets tried, in order, for a local URI without an explicit socket: the
// monolithic libvirtd's, then the modular daemon's.
var defaultSockets = []string{"/run/libvirt/libvirt-sock", "/run/libvirt/virtqemud-sock"}

// ConnOptions say how to reach libvirt.
type ConnOptions struct {
	// URI is a libvirt URI; "" means qemu:///system. Remote URIs
	// (qemu+tcp://..., qemu+ssh://...) go through go-libvirt's dialers.
	URI string
	// Socket is the local socket to dial, overriding the defaults.
	Socket string
	// Timeout bounds every libvirt call (go-libvirt calls take no context);
	// 0 means 30 s. DomainCreate under TCG can take seconds when many start.
	Timeout time.Duration
}

// Conn is a connection to libvirt with a timeout around every call.
type Conn struct {
	lv      *libvirt.Libvirt
	timeout time.Duration
	uri     string
}

// ErrUnavailable is wrapped when libvirt cannot be reached at all.
var ErrUnavailable = errors.New("libvirt unavailable")

// Connect dials libvirt.
func Connect(ctx context.Context, o ConnOptions) (*Conn, error) {
	if o.URI == "" {
		o.URI = DefaultURI
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	u, err := url.Parse(o.URI)
	if err != nil {
		return nil, fmt.Errorf("libvirt URI %q: %w", o.URI, err)
	}
	c := &Conn{timeout: o.Timeout, uri: o.URI}
	local := u.Host == "" && (u.Scheme == "qemu" || u.Scheme == "qemu+unix")
	if !local {
		lv, err := callT(ctx, c, "connect to "+o.URI, func() (*libvirt.Libvirt, error) { return libvirt.ConnectToURI(u) })
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		c.lv = lv
		return c, nil
	}
	sock := o.Socket
	if sock == "" {
		sock = u.Query().Get("socket")
	}
	if sock == "" {
		for _, s := range defaultSockets {
			if _, err := os.Stat(s); err == nil {
				sock = s
				break
			}
		}
	}
	if sock == "" {
		return nil, fmt.Errorf("%w: no libvirt socket (tried %v); is libvirtd running? (scripts/vm-deps.sh starts it)", ErrUnavailable, defaultSockets)
	}
	lv := libvirt.NewWithDialer(dialers.NewLocal(dialers.WithSocket(sock), dialers.WithLocalTimeout(o.Timeout)))
	if err := call(ctx, c, "connect to "+o.URI+" via "+sock, func() error {
		return lv.ConnectToURI(libvirt.RemoteURI(u))
	}); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	c.lv = lv
	return c, nil
}

// Close ends the connection.
func (c *Conn) Close() error {
	return call(context.Background(), c, "disconnect from "+c.uri, c.lv.Disconnect)
}

// URI is what the connection was opened with.
func (c *Conn) URI() string { return c.uri }

// call runs one libvirt call with the connection's timeout (and ctx). A call
// that times out is abandoned; go-libvirt completes or fails it later.
func call(ctx context.Context, c *Conn, what string, f func() error) error {
	_, err := callT(ctx, c, what, func() (struct{}, error) { return struct{}{}, f() })
	return err
}

func callT[T any](ctx context.Context, c *Conn, what string, f func() (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := f()
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return r.v, fmt.Errorf("%s: %w", what, r.err)
		}
		return r.v, nil
	case <-ctx.Done():
		var zero T
		return zero, fmt.Errorf("%s: %w", what, ctx.Err())
	}
}

// isNotFound reports libvirt's "no such domain".
func isNotFound(err error) bool { return libvirt.IsNotFound(err) }

// isInvalidOp reports libvirt's "operation invalid" (e.g. destroying a domain
// that is not running).
func isInvalidOp(err error) bool {
	var e libvirt.Error
	return errors.As(err, &e) && e.Code == uint32(libvirt.ErrOperationInvalid)
}
