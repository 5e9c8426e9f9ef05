// Package ssh is SSHPower, the power and management interface of the
// spec's agent_ssh and pxe_ssh classes: it logs in to the virtualization
// host over SSH (a real golang.org/x/crypto/ssh client) and runs the virsh
// command lines Ironic's old ironic/drivers/modules/ssh.py ran.
//
// driver_info: ssh_address, ssh_port (22), ssh_username, exactly one of
// ssh_password, ssh_key_contents (a PEM private key) or ssh_key_filename,
// ssh_virt_type ("virsh", the only type this lab's host runs), and
// optionally ssh_domain, the VM's name on the host. Without ssh_domain the
// VM is found by the node's UUID (`virsh domname <uuid>`: the lab defines
// its VMs with the node's UUID), where Ironic listed every VM and matched
// MACs; the conductor hands power interfaces driver_info, not ports.
//
// Host keys are accepted unchecked, as Ironic's paramiko AutoAddPolicy did.
package ssh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/ironlab/ironlab/driver/power"
)

// Config tunes SSHPower. Zero values take the defaults noted.
type Config struct {
	// LibvirtURI is added as virsh --connect ("qemu:///system", Ironic's
	// [ssh]libvirt_uri).
	LibvirtURI string
	// DialTimeout bounds the TCP connect and SSH handshake (10 s).
	DialTimeout time.Duration
	// PollInterval / PollAttempts: how often the state is read back after a
	// soft power off (1 s x 30).
	PollInterval time.Duration
	PollAttempts int
}

// Power is the "ssh" power interface.
type Power struct {
	cfg Config
}

var _ power.Interface = (*Power)(nil)

// New returns SSHPower.
func New(cfg Config) *Power {
	if cfg.LibvirtURI == "" {
		cfg.LibvirtURI = "qemu:///system"
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.PollAttempts <= 0 {
		cfg.PollAttempts = 30
	}
	return &Power{cfg: cfg}
}

// Name is "ssh".
func (p *Power) Name() string { return "ssh" }

// Ironic's virsh command set (ssh.py, _get_command_sets).
const (
	cmdStart         = "start {_NodeName_}"
	cmdStop          = "destroy {_NodeName_}"
	cmdListRunning   = "list --name"
	cmdSetBootDevice = `EDITOR="sed -i '/<boot \(dev\|order\)=*\>/d;/<\/os>/i\<boot dev=\"{_BootDevice_}\"/>'" {_BaseCmd_} edit {_NodeName_}`
)

// bootDevices is Ironic's _BOOT_DEVICES_MAP for virsh.
var bootDevices = map[power.Device]string{power.PXE: "network", power.Disk: "hd"}

type info struct {
	addr, user, password, domain, uuid string
	key                                ssh.Signer
}

func str(i power.DriverInfo, k string) string {
	switch v := i[k].(type) {
	case string:
		return v
	case nil:
		return ""
	default:
		return fmt.Sprint(v)
	}
}

func parse(i power.DriverInfo) (info, error) {
	var in info
	for _, k := range []string{"ssh_address", "ssh_username", "ssh_virt_type"} {
		if str(i, k) == "" {
			return in, fmt.Errorf("%w: SSHPower requires %s", power.ErrMissingInfo, k)
		}
	}
	if vt := str(i, "ssh_virt_type"); vt != "virsh" {
		return in, fmt.Errorf("ssh_virt_type %q is not supported: this lab's host runs virsh", vt)
	}
	port := 22
	if s := str(i, "ssh_port"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 || n > 65535 {
			return in, fmt.Errorf("ssh_port %q is not a port", s)
		}
		port = n
	}
	in.addr = net.JoinHostPort(str(i, "ssh_address"), strconv.Itoa(port))
	in.user = str(i, "ssh_username")
	in.domain = str(i, "ssh_domain")
	in.uuid = str(i, power.NodeUUIDKey)
	pw, kc, kf := str(i, "ssh_password"), str(i, "ssh_key_contents"), str(i, "ssh_key_filename")
	set := 0
	for _, v := range []string{pw, kc, kf} {
		if v != "" {
			set++
		}
	}
	if set != 1 {
		return in, fmt.Errorf("%w: SSHPower requires one and only one of ssh_password, ssh_key_contents and ssh_key_filename", power.ErrMissingInfo)
	}
	in.password = pw
	if kf != "" {
		b, err := os.ReadFile(kf)
		if err != nil {
			return in, fmt.Errorf("ssh_key_filename: %w", err)
		}
		kc = string(b)
	}
	if kc != "" {
		k, err := ssh.ParsePrivateKey([]byte(kc))
		if err != nil {
			return in, fmt.Errorf("ssh key: %w", err)
		}
		in.key = k
	}
	if in.domain == "" && in.uuid == "" {
		return in, fmt.Errorf("%w: SSHPower needs ssh_domain (or the node's UUID to find its VM)", power.ErrMissingInfo)
	}
	return in, nil
}

// Validate checks driver_info (it does not connect).
func (p *Power) Validate(i power.DriverInfo) error {
	_, err := parse(i)
	return err
}

// session is one SSH connection to the host for one power call.
type session struct {
	p    *Power
	in   info
	c    *ssh.Client
	stop func() bool
	name string
}

func (p *Power) connect(ctx context.Context, i power.DriverInfo) (*session, error) {
	in, err := parse(i)
	if err != nil {
		return nil, err
	}
	cfg := &ssh.ClientConfig{
		User:            in.user,
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), // as paramiko's AutoAddPolicy
		Timeout:         p.cfg.DialTimeout,
	}
	if in.key != nil {
		cfg.Auth = []ssh.AuthMethod{ssh.PublicKeys(in.key)}
	} else {
		cfg.Auth = []ssh.AuthMethod{ssh.Password(in.password)}
	}
	d := net.Dialer{Timeout: p.cfg.DialTimeout}
	nc, err := d.DialContext(ctx, "tcp", in.addr)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: %w", in.addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	} else {
		_ = nc.SetDeadline(time.Now().Add(p.cfg.DialTimeout))
	}
	cc, chans, reqs, err := ssh.NewClientConn(nc, in.addr, cfg)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("ssh %s@%s: %w", in.user, in.addr, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		_ = nc.SetDeadline(time.Time{})
	}
	s := &session{p: p, in: in, c: ssh.NewClient(cc, chans, reqs)}
	// A cancelled call closes the connection, which ends a running command.
	s.stop = context.AfterFunc(ctx, func() { s.c.Close() })
	return s, nil
}

func (s *session) close() {
	s.stop()
	s.c.Close()
}

func (s *session) base() string {
	return "LC_ALL=C /usr/bin/virsh --connect " + s.p.cfg.LibvirtURI
}

// run executes one command line; a non-zero exit is an error with stderr.
func (s *session) run(line string) (string, error) {
	ss, err := s.c.NewSession()
	if err != nil {
		return "", fmt.Errorf("ssh %s: new session: %w", s.in.addr, err)
	}
	defer ss.Close()
	var out, errOut bytes.Buffer
	ss.Stdout, ss.Stderr = &out, &errOut
	if err := ss.Run(line); err != nil {
		var ee *ssh.ExitError
		if errors.As(err, &ee) {
			return out.String(), fmt.Errorf("ssh %s: %q: exit status %d: %s", s.in.addr, line, ee.ExitStatus(), strings.TrimSpace(errOut.String()))
		}
		return out.String(), fmt.Errorf("ssh %s: %q: %w", s.in.addr, line, err)
	}
	return out.String(), nil
}

// virsh runs one of Ironic's virsh commands against the node's VM.
func (s *session) virsh(tmpl string) (string, error) {
	name, err := s.nodeName()
	if err != nil {
		return "", err
	}
	line := tmpl
	if !strings.Contains(tmpl, "{_BaseCmd_}") {
		line = s.base() + " " + tmpl
	}
	line = strings.ReplaceAll(line, "{_BaseCmd_}", s.base())
	return s.run(strings.ReplaceAll(line, "{_NodeName_}", name))
}

// nodeName is the VM's name on the host: ssh_domain, or `virsh domname`
// of the node's UUID.
func (s *session) nodeName() (string, error) {
	if s.name != "" {
		return s.name, nil
	}
	if s.in.domain != "" {
		// As Ironic's _get_hosts_name_for_node: the VM must be on the host.
		out, err := s.run(s.base() + " list --all --name")
		if err != nil {
			return "", err
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.TrimSpace(l) == s.in.domain {
				s.name = s.in.domain
				return s.name, nil
			}
		}
		return "", fmt.Errorf("VM %q (ssh_domain) is not among the VMs of %s", s.in.domain, s.in.addr)
	}
	out, err := s.run(s.base() + " domname " + s.in.uuid)
	if err != nil {
		return "", fmt.Errorf("find the VM of node %s: %w", s.in.uuid, err)
	}
	s.name = strings.TrimSpace(out)
	if s.name == "" {
		return "", fmt.Errorf("find the VM of node %s on %s: virsh domname printed nothing", s.in.uuid, s.in.addr)
	}
	return s.name, nil
}

// state reads the power state as Ironic did: is the VM in `virsh list --name`?
func (s *session) state() (power.State, error) {
	name, err := s.nodeName()
	if err != nil {
		return "", err
	}
	out, err := s.virsh(cmdListRunning)
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if l == name || l == `"`+name+`"` {
			return power.On, nil
		}
	}
	return power.Off, nil
}

// GetPowerState is `virsh list --name` on the host.
func (p *Power) GetPowerState(ctx context.Context, i power.DriverInfo) (power.State, error) {
	s, err := p.connect(ctx, i)
	if err != nil {
		return "", err
	}
	defer s.close()
	return s.state()
}

// SetPowerState: On is `virsh start` (nothing when running; Ironic restarted
// a running VM), Off `virsh destroy`, SoftOff `virsh shutdown` and a wait,
// Reboot destroy then start (Ironic's reboot). The state is read back.
func (p *Power) SetPowerState(ctx context.Context, i power.DriverInfo, target power.State) error {
	s, err := p.connect(ctx, i)
	if err != nil {
		return err
	}
	defer s.close()
	cur, err := s.state()
	if err != nil {
		return err
	}
	off := func() error {
		if cur == power.Off {
			return nil
		}
		if _, err := s.virsh(cmdStop); err != nil {
			return err
		}
		return s.expect(power.Off)
	}
	on := func() error {
		if _, err := s.virsh(cmdStart); err != nil {
			return err
		}
		return s.expect(power.On)
	}
	switch target {
	case power.On:
		if cur == power.On {
			return nil
		}
		return on()
	case power.Off:
		return off()
	case power.SoftOff:
		if cur == power.Off {
			return nil
		}
		if _, err := s.virsh("shutdown {_NodeName_}"); err != nil {
			return err
		}
		for n := 0; n < p.cfg.PollAttempts; n++ {
			if st, err := s.state(); err == nil && st == power.Off {
				return nil
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(p.cfg.PollInterval):
			}
		}
		return fmt.Errorf("VM %s did not power off after virsh shutdown", s.name)
	case power.Reboot:
		if err := off(); err != nil {
			return err
		}
		return on()
	}
	return fmt.Errorf("SSHPower: unsupported power state %q", target)
}

func (s *session) expect(want power.State) error {
	st, err := s.state()
	if err != nil {
		return err
	}
	if st != want {
		return fmt.Errorf("VM %s is %s after the command, not %s", s.name, st, want)
	}
	return nil
}

// SetBootDevice runs Ironic's `EDITOR="sed ..." virsh edit`; the device is
// persistent whatever is asked (Ironic's SSHManagement ignored persistent).
func (p *Power) SetBootDevice(ctx context.Context, i power.DriverInfo, dev power.Device, _ power.BootOptions) error {
	vd, ok := bootDevices[dev]
	if !ok {
		return fmt.Errorf("SSHPower: invalid boot device %q", dev)
	}
	s, err := p.connect(ctx, i)
	if err != nil {
		return err
	}
	defer s.close()
	_, err = s.virsh(strings.ReplaceAll(cmdSetBootDevice, "{_BootDevice_}", vd))
	return err
}
