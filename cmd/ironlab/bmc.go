package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"

	"github.com/ironlab/ironlab/simulator/bmc"
	libvirtvm "github.com/ironlab/ironlab/simulator/libvirt"
)

func init() {
	register("bmc", "serve virtual IPMI BMCs for existing libvirt domains (a virtualbmc replacement)", runBMC)
}

// bmcFile is the --config format: several domains, one BMC each.
type bmcFile struct {
	LibvirtURI    string      `yaml:"libvirt_uri"`
	LibvirtSocket string      `yaml:"libvirt_socket"`
	BMCs          []bmcDomain `yaml:"bmcs"`
}

type bmcDomain struct {
	Domain   string `yaml:"domain"`
	Address  string `yaml:"address"` // loopback; default 127.0.0.1
	Port     int    `yaml:"port"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
}

func runBMC(args []string) int {
	fs := flag.NewFlagSet("bmc", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: ironlab bmc --domain NAME [--port 6230] [--user admin --password PASS] [flags]
       ironlab bmc --config bmcs.yaml

Serves an IPMI BMC (RMCP+ on UDP, loopback only) in front of a libvirt domain
that already exists, like virtualbmc: power on/off/soft/reset/cycle map to
libvirt calls, and "chassis bootdev pxe|disk [options=persistent]" rewrites the
domain XML for its next start (a one-time device reverts after that start).

A config file serves several domains:

  libvirt_uri: qemu:///system
  bmcs:
    - {domain: vm1, port: 6230, username: admin, password: secret}
    - {domain: vm2, port: 6231, username: admin, password: secret}

Flags:
`)
		fs.PrintDefaults()
	}
	uri := fs.String("libvirt-uri", libvirtvm.DefaultURI, "libvirt URI")
	sock := fs.String("libvirt-socket", "", "libvirt socket path (default: libvirtd's, else virtqemud's)")
	domain := fs.String("domain", "", "libvirt domain to serve")
	addr := fs.String("address", "127.0.0.1", "loopback address to listen on")
	port := fs.Int("port", 6230, "UDP port to listen on")
	user := fs.String("user", bmc.DefaultCredentials().Username, "IPMI user name")
	pass := fs.String("password", bmc.DefaultCredentials().Password, "IPMI password")
	config := fs.String("config", "", "YAML file with several domains (see above)")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	var cfg bmcFile
	if *config != "" {
		b, err := os.ReadFile(*config)
		if err != nil {
			fmt.Fprintf(os.Stderr, "ironlab bmc: %v\n", err)
			return 2
		}
		if cfg, err = parseBMCFile(*config, b); err != nil {
			fmt.Fprintf(os.Stderr, "ironlab bmc: %v\n", err)
			return 2
		}
	} else {
		if *domain == "" {
			fmt.Fprintf(os.Stderr, "ironlab bmc: --domain or --config is required\n")
			fs.Usage()
			return 2
		}
		cfg.BMCs = []bmcDomain{{Domain: *domain, Address: *addr, Port: *port, Username: *user, Password: *pass}}
	}
	if cfg.LibvirtURI == "" {
		cfg.LibvirtURI = *uri
	}
	if cfg.LibvirtSocket == "" {
		cfg.LibvirtSocket = *sock
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ready := func(d bmcDomain, at string) {
		fmt.Printf("bmc: domain %s on %s (user %s)\n", d.Domain, at, d.Username)
	}
	if err := serveBMCs(ctx, cfg, ready); err != nil {
		fmt.Fprintf(os.Stderr, "ironlab bmc: %v\n", err)
		return 1
	}
	return 0
}

// parseBMCFile reads a --config file strictly and checks each entry before
// anything connects: errors name the file and the entry's field.
func parseBMCFile(name string, data []byte) (bmcFile, error) {
	var cfg bmcFile
	// goccy/go-yaml counts the CRLF after a comment as two lines.
	data = bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n"))
	// goccy/go-yaml v1.19.2 panics on a tag over a scalar where a list is
	// expected ("bmcs: !x 5"; goccy/go-yaml#735, fixed after v1.19.2);
	// the file takes no tags.
	if f, err := parser.ParseBytes(data, 0); err == nil {
		for _, doc := range f.Docs {
			if doc.Body == nil {
				continue
			}
			for _, n := range ast.Filter(ast.TagType, doc.Body) {
				p := n.GetToken().Position
				return bmcFile{}, fmt.Errorf("%s: [%d:%d] YAML tag %s: the file takes no tags (quote the value instead)", name, p.Line, p.Column, n.GetToken().Value)
			}
		}
	}
	if err := yaml.UnmarshalWithOptions(data, &cfg, yaml.Strict()); err != nil {
		return bmcFile{}, fmt.Errorf("%s: %v", name, err)
	}
	if len(cfg.BMCs) == 0 {
		return bmcFile{}, fmt.Errorf("%s: bmcs: no BMCs configured", name)
	}
	seen := map[string]int{}
	for i := range cfg.BMCs {
		d := &cfg.BMCs[i]
		bad := func(field, format string, a ...any) error {
			return fmt.Errorf("%s: bmcs[%d].%s: %s", name, i, field, fmt.Sprintf(format, a...))
		}
		if d.Domain == "" {
			return bmcFile{}, bad("domain", "missing: the libvirt domain to serve")
		}
		if d.Address == "" {
			d.Address = "127.0.0.1"
		}
		ip, err := netip.ParseAddr(d.Address)
		if err != nil || !ip.IsLoopback() || ip.Zone() != "" {
			return bmcFile{}, bad("address", "%q is not a loopback address (the lab listens on loopback only)", d.Address)
		}
		if d.Port < 1 || d.Port > 65535 {
			return bmcFile{}, bad("port", "want a UDP port 1-65535, got %d", d.Port)
		}
		at := netip.AddrPortFrom(ip.Unmap(), uint16(d.Port)).String()
		if j, dup := seen[at]; dup {
			return bmcFile{}, bad("port", "%s is taken by bmcs[%d] already", at, j)
		}
		seen[at] = i
	}
	return cfg, nil
}

// serveBMCs serves one BMC per configured domain until ctx ends.
func serveBMCs(ctx context.Context, cfg bmcFile, ready func(d bmcDomain, addr string)) error {
	if len(cfg.BMCs) == 0 {
		return errors.New("no BMCs configured")
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	conn, err := libvirtvm.Connect(cctx, libvirtvm.ConnOptions{URI: cfg.LibvirtURI, Socket: cfg.LibvirtSocket})
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close()
	var bmcs []*bmc.BMC
	defer func() {
		for _, b := range bmcs {
			b.Close()
		}
	}()
	for _, d := range cfg.BMCs {
		if d.Address == "" {
			d.Address = "127.0.0.1"
		}
		if d.Port == 0 {
			return fmt.Errorf("domain %s: no port", d.Domain)
		}
		creds := bmc.Credentials{Username: d.Username, Password: d.Password}
		if creds.Username == "" {
			creds = bmc.DefaultCredentials()
		}
		actx, cancel := context.WithTimeout(ctx, 15*time.Second)
		m, err := libvirtvm.Adopt(actx, conn, d.Domain, slog.Default())
		cancel()
		if err != nil {
			return err
		}
		at := net.JoinHostPort(d.Address, strconv.Itoa(d.Port))
		b, err := bmc.New(m, at, bmc.Options{Credentials: creds})
		if err != nil {
			return err
		}
		b.Start(ctx)
		bmcs = append(bmcs, b)
		if ready != nil {
			ready(d, b.Addr().String())
		}
	}
	<-ctx.Done()
	return nil
}
