package fakeagent

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/ironlab/ironlab/internal/httpstop"
)

// Auto-TLS as IPA's tls_utils does it: when the driver API is at least 1.68
// (agent_verify_ca in heartbeats), the agent makes a self-signed ECDSA P-256
// certificate for its advertised address, serves its API over https and
// sends the certificate's PEM as agent_verify_ca, which the conductor then
// uses to verify the agent.
const (
	autoTLSMinor = 68
	// certValidity and certClockSkew are IPA's: 30 days, valid from an hour
	// ago (auto_tls_allowed_clock_skew = 3600 s).
	certValidity  = 30 * 24 * time.Hour
	certClockSkew = time.Hour
)

// Certificate is a generated key pair with its PEM, as sent in
// agent_verify_ca.
type Certificate struct {
	TLS tls.Certificate
	PEM string
}

// GenerateCertificate makes IPA's auto-TLS certificate: self-signed, ECDSA
// P-256 signed with SHA-512, common name the host name, and a critical
// subjectAltName with host (an IP address as in IPA, or a DNS name).
func GenerateCertificate(host string) (*Certificate, error) {
	if host == "" {
		return nil, errors.New("generate TLS certificate: no host to issue it for")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate TLS key for %s: %w", host, err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 159))
	if err != nil {
		return nil, fmt.Errorf("generate TLS serial for %s: %w", host, err)
	}
	cn, _ := os.Hostname()
	if cn == "" {
		cn = host
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:       serial,
		Subject:            pkix.Name{CommonName: cn},
		NotBefore:          now.Add(-certClockSkew),
		NotAfter:           now.Add(certValidity),
		SignatureAlgorithm: x509.ECDSAWithSHA512,
		KeyUsage:           x509.KeyUsageDigitalSignature,
		ExtKeyUsage:        []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	// Go marks subjectAltName critical only when the subject is empty;
	// IPA's is critical with a subject, so the extension is built here.
	var name asn1.RawValue
	if ip := net.ParseIP(host); ip != nil {
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		name = asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 7, Bytes: ip}
	} else {
		name = asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 2, Bytes: []byte(host)}
	}
	san, err := asn1.Marshal([]asn1.RawValue{name})
	if err != nil {
		return nil, fmt.Errorf("encode subjectAltName %s: %w", host, err)
	}
	tmpl.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Critical: true, Value: san}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("sign TLS certificate for %s: %w", host, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse TLS certificate for %s: %w", host, err)
	}
	return &Certificate{
		TLS: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
		PEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
	}, nil
}

func (c *Certificate) serverConfig() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{c.TLS}, MinVersion: tls.VersionTLS12}
}

// tlsWanted reports whether this agent uses auto-TLS with a driver API
// whose maximum microversion is 1.minor (IPA's supports_auto_tls).
func (a *Agent) tlsWanted(minor int) bool {
	return !a.cfg.DisableAutoTLS && a.cfg.Dialect == DialectV1 && minor >= autoTLSMinor
}

// AutoTLS prepares the API listener of a standalone agent (the VM ramdisk
// and `ironlab agent`) as IPA does before it heartbeats: it asks the driver
// API for its version and, from 1.68 on unless auto-TLS is disabled, makes a
// certificate for the advertised host, returns ln wrapped in TLS and from
// then on advertises an https URL and sends agent_verify_ca. Otherwise ln
// comes back as it is. Call it before Run.
func (a *Agent) AutoTLS(ctx context.Context, ln net.Listener) (net.Listener, error) {
	if a.cfg.Mux != nil {
		return nil, errors.New("fakeagent: AutoTLS is for standalone agents; the Mux serves this one")
	}
	if a.cfg.DisableAutoTLS {
		a.event("auto-TLS disabled by configuration")
		return ln, nil
	}
	if a.cfg.Dialect != DialectV1 {
		return ln, nil
	}
	minor := a.discoverAPIMinor(ctx)
	if !a.tlsWanted(minor) {
		a.event("auto-TLS not used: the driver API is older than 1.68", "driver_api", fmt.Sprintf("1.%d", minor))
		return ln, nil
	}
	u, err := url.Parse(a.cfg.AdvertiseURL)
	if err != nil {
		return nil, fmt.Errorf("auto-TLS: advertise URL %q: %w", a.cfg.AdvertiseURL, err)
	}
	cert, err := GenerateCertificate(u.Hostname())
	if err != nil {
		return nil, fmt.Errorf("auto-TLS: %w", err)
	}
	u.Scheme = "https"
	a.mu.Lock()
	a.cert = cert
	a.advertiseURL = u.String()
	a.mu.Unlock()
	a.event("auto-TLS enabled", "advertise", u.String(), "driver_api", fmt.Sprintf("1.%d", minor))
	return tls.NewListener(ln, cert.serverConfig()), nil
}

// Serve serves the agent's API on ln until ctx ends.
func (a *Agent) Serve(ctx context.Context, ln net.Listener) error {
	srv := httpstop.New(&http.Server{Handler: a, ReadHeaderTimeout: 30 * time.Second,
		ErrorLog: slog.NewLogLogger(a.logger().Handler(), slog.LevelDebug)})
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("agent API on %s: %w", ln.Addr(), err)
	}
	return nil
}

// discoverAPIMinor asks GET / for the driver API's maximum microversion,
// a few times; like IPA it falls back to "old" (no auto-TLS) when the API
// cannot be reached.
func (a *Agent) discoverAPIMinor(ctx context.Context) int {
	var err error
	for i := 0; i < 5; i++ {
		var minor int
		if minor, err = a.maxAPIMinor(ctx); err == nil {
			a.apiMinor = minor
			return minor
		}
		if !sleepCtx(ctx, a.cfg.LookupInterval) {
			break
		}
	}
	a.logger().Warn("could not read the driver API's version; auto-TLS not used", "err", err)
	return 0
}

// decoyCertificate is the wrong_verify_ca fault's certificate: made once,
// for the same host, never served.
func (a *Agent) decoyCertificate() (string, error) {
	a.decoyOnce.Do(func() {
		var c *Certificate
		if c, a.decoyErr = GenerateCertificate("127.0.0.1"); c != nil {
			a.decoyPEM = c.PEM
		}
	})
	return a.decoyPEM, a.decoyErr
}

// CertificatePEM is the certificate the agent sends as agent_verify_ca, or
// "" when it serves plain http.
func (a *Agent) CertificatePEM() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.verifyCALocked()
}

// sniffListener serves TLS and plain HTTP on one port: a connection whose
// first byte is a TLS handshake record (0x16) gets TLS. The Mux needs it
// because its agents choose TLS one by one (legacy dialect, old driver API,
// auto-TLS disabled) while sharing one listener.
type sniffListener struct {
	net.Listener
	cfg   *tls.Config
	conns chan net.Conn
	errc  chan error
	once  sync.Once
	done  chan struct{}
}

func newSniffListener(ln net.Listener, cfg *tls.Config) *sniffListener {
	s := &sniffListener{Listener: ln, cfg: cfg, conns: make(chan net.Conn), errc: make(chan error, 1), done: make(chan struct{})}
	go s.acceptLoop()
	return s
}

func (s *sniffListener) acceptLoop() {
	for {
		c, err := s.Listener.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.errc <- err
			return
		}
		go s.classify(c)
	}
}

// classify peeks at the first byte (within 10 s) and hands the connection on.
func (s *sniffListener) classify(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	b, err := br.Peek(1)
	_ = c.SetReadDeadline(time.Time{})
	if err != nil {
		c.Close()
		return
	}
	var out net.Conn = &peekedConn{Conn: c, r: br}
	if b[0] == 0x16 {
		out = tls.Server(out, s.cfg)
	}
	select {
	case s.conns <- out:
	case <-s.done:
		c.Close()
	}
}

func (s *sniffListener) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case err := <-s.errc:
		s.errc <- err
		return nil, err
	case <-s.done:
		return nil, net.ErrClosed
	}
}

func (s *sniffListener) Close() error {
	s.once.Do(func() { close(s.done) })
	return s.Listener.Close()
}

type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (p *peekedConn) Read(b []byte) (int, error) { return p.r.Read(b) }
