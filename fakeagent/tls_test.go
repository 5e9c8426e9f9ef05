package fakeagent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// clientTrusting is an HTTP client whose only root is caPEM.
func clientTrusting(t *testing.T, caPEM string) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(caPEM)) {
		t.Fatalf("not a PEM certificate: %q", caPEM)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

func TestGenerateCertificateIsIPAs(t *testing.T) {
	c, err := GenerateCertificate("127.0.0.7")
	if err != nil {
		t.Fatal(err)
	}
	blk, rest := pem.Decode([]byte(c.PEM))
	if blk == nil || blk.Type != "CERTIFICATE" || len(strings.TrimSpace(string(rest))) != 0 {
		t.Fatalf("PEM = %q, want one CERTIFICATE block", c.PEM)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key = %T, want ECDSA P-256 (IPA's SECP256R1)", cert.PublicKey)
	}
	if cert.SignatureAlgorithm != x509.ECDSAWithSHA512 {
		t.Errorf("signature = %v, want ECDSA with SHA-512", cert.SignatureAlgorithm)
	}
	if len(cert.IPAddresses) != 1 || !cert.IPAddresses[0].Equal(net.ParseIP("127.0.0.7")) {
		t.Errorf("IP SANs = %v, want [127.0.0.7]", cert.IPAddresses)
	}
	sanOID := asn1.ObjectIdentifier{2, 5, 29, 17}
	critical := false
	for _, e := range cert.Extensions {
		if e.Id.Equal(sanOID) {
			critical = e.Critical
		}
	}
	if !critical {
		t.Error("subjectAltName is not critical; IPA marks it critical")
	}
	if cert.Issuer.String() != cert.Subject.String() {
		t.Errorf("issuer %q != subject %q: not self-signed", cert.Issuer, cert.Subject)
	}
	if d := time.Until(cert.NotAfter); d < 29*24*time.Hour || d > 31*24*time.Hour {
		t.Errorf("valid for another %s, want IPA's 30 days", d)
	}
	if time.Since(cert.NotBefore) < 59*time.Minute {
		t.Errorf("not valid before %s: want an hour of allowed clock skew", cert.NotBefore)
	}
	// The certificate is its own root: what the conductor does with it.
	if _, err := cert.Verify(x509.VerifyOptions{Roots: poolOf(t, c.PEM), DNSName: "127.0.0.7"}); err != nil {
		t.Errorf("verify against itself: %v", err)
	}
}

func poolOf(t *testing.T, p string) *x509.CertPool {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(p)) {
		t.Fatal("bad PEM")
	}
	return pool
}

// startTLSAgent runs a standalone agent the way `ironlab agent` does:
// AutoTLS on its listener, then Serve and Run.
func startTLSAgent(t *testing.T, api *scriptedIronic, mac string, mod func(*Config)) (*Agent, net.Listener) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		APIURL: api.srv.URL, AdvertiseURL: "http://" + ln.Addr().String(), Hardware: NewMemHardware(testHardware(t, mac)),
		LookupInterval: 10 * time.Millisecond, HeartbeatErrorBackoff: 10 * time.Millisecond, Logger: quietLogger(),
	}
	if mod != nil {
		mod(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sln, err := a.AutoTLS(ctx, ln)
	if err != nil {
		t.Fatal(err)
	}
	served, ran := make(chan struct{}), make(chan struct{})
	go func() { defer close(served); _ = a.Serve(ctx, sln) }()
	go func() { defer close(ran); _ = a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		for _, c := range []chan struct{}{served, ran} {
			select {
			case <-c:
			case <-time.After(10 * time.Second):
				t.Error("agent did not stop")
			}
		}
	})
	return a, sln
}

func TestStandaloneAutoTLS(t *testing.T) {
	api := newScriptedIronic(t, 99)
	api.addNode(nodeA, true, macA)
	a, ln := startTLSAgent(t, api, macA, nil)
	hb := nextHeartbeat(t, api)
	want := "https://" + ln.Addr().String()
	if hb.URL != want {
		t.Errorf("callback_url = %q, want %q", hb.URL, want)
	}
	if hb.VerifyCA == "" || hb.VerifyCA != a.CertificatePEM() {
		t.Fatalf("agent_verify_ca = %q, want the agent's certificate", hb.VerifyCA)
	}
	// The conductor's view: trusting exactly agent_verify_ca works...
	resp, err := clientTrusting(t, hb.VerifyCA).Get(hb.URL + "/v1/status")
	if err != nil {
		t.Fatalf("GET status with the agent's CA: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("status = %d", resp.StatusCode)
	}
	// ...another certificate does not...
	other, err := GenerateCertificate("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := clientTrusting(t, other.PEM).Get(hb.URL + "/v1/status"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("GET status trusting another certificate: err = %v, want a certificate error", err)
	}
	// ...and plain http is not served any more.
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + ln.Addr().String() + "/v1/status"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("plain http answered 200 on the TLS listener")
		}
	}
}

func TestAutoTLSNotUsed(t *testing.T) {
	for name, tc := range map[string]struct {
		minor int
		mod   func(*Config)
	}{
		"driver API older than 1.68": {minor: 67},
		"disabled by configuration":  {minor: 99, mod: func(c *Config) { c.DisableAutoTLS = true }},
	} {
		t.Run(name, func(t *testing.T) {
			api := newScriptedIronic(t, tc.minor)
			api.addNode(nodeA, true, macA)
			a, ln := startTLSAgent(t, api, macA, tc.mod)
			hb := nextHeartbeat(t, api)
			if want := "http://" + ln.Addr().String(); hb.URL != want {
				t.Errorf("callback_url = %q, want %q", hb.URL, want)
			}
			if hb.VerifyCA != "" || a.CertificatePEM() != "" {
				t.Errorf("agent_verify_ca = %q, want none", hb.VerifyCA)
			}
			resp, err := http.Get(hb.URL + "/v1/status")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("status = %d", resp.StatusCode)
			}
		})
	}
}

func TestMuxServesHTTPAgentsBesideTLSOnes(t *testing.T) {
	api := newScriptedIronic(t, 99)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mux, err := ListenMux(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	api.addNode(nodeA, true, macA)
	api.addNode(nodeB, true, macB)
	for _, n := range []struct {
		mac string
		off bool
	}{{macA, false}, {macB, true}} {
		a, err := New(Config{APIURL: api.srv.URL, Mux: mux, Hardware: NewMemHardware(testHardware(t, n.mac)), DisableAutoTLS: n.off,
			LookupInterval: 10 * time.Millisecond, HeartbeatErrorBackoff: 10 * time.Millisecond, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { defer close(done); _ = a.Run(ctx) }()
		defer func() { cancel(); <-done }()
	}
	got := map[string]heartbeat{}
	for len(got) < 2 {
		hb := nextHeartbeat(t, api)
		got[hb.Node] = hb
	}
	if hb := got[nodeA]; hb.URL != mux.TLSURL(nodeA) || hb.VerifyCA == "" {
		t.Errorf("auto-TLS agent heartbeated %q with CA %t, want %q with the Mux's CA", hb.URL, hb.VerifyCA != "", mux.TLSURL(nodeA))
	}
	if hb := got[nodeB]; hb.URL != mux.URL(nodeB) || hb.VerifyCA != "" {
		t.Errorf("plain agent heartbeated %q with CA %t, want %q without", hb.URL, hb.VerifyCA != "", mux.URL(nodeB))
	}
	for url, c := range map[string]*http.Client{
		got[nodeA].URL: clientTrusting(t, got[nodeA].VerifyCA),
		got[nodeB].URL: {Timeout: 5 * time.Second},
	} {
		resp, err := c.Get(url + "/v1/status")
		if err != nil {
			t.Fatalf("GET %s/v1/status: %v", url, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET %s/v1/status = %d", url, resp.StatusCode)
		}
	}
}

func TestPregeneratedAgentToken(t *testing.T) {
	api := newScriptedIronic(t, 99)
	api.addNode(nodeA, true, macA)
	const token = "pregenerated-token-0123456789abcdefghij"
	api.mu.Lock()
	api.nodes[nodeA].token = token // the lookup answers "******"
	api.mu.Unlock()
	ta := startAgent(t, api, testHardware(t, macA), func(c *Config) { c.AgentToken = token })
	hb := nextHeartbeat(t, api)
	if hb.Token != token {
		t.Errorf("heartbeat token = %q, want the pregenerated one", hb.Token)
	}
	if code, _ := ta.post(t, "standby.sync", map[string]any{}, true, token); code != 200 {
		t.Errorf("command with the pregenerated token = %d, want 200", code)
	}
	if code, _ := ta.post(t, "standby.sync", map[string]any{}, true, "wrong-token-0123456789abcdefghijklmn"); code != 401 {
		t.Errorf("command with another token = %d, want 401", code)
	}
}

func TestCmdlineTLSAndTokenOptions(t *testing.T) {
	base := "ipa-api-url=http://10.0.2.2:6385 ipa-advertise-host=127.0.0.1 "
	c, err := ConfigFromCmdline(base + "ipa-enable-auto-tls=0 ipa-agent-token=0123456789abcdef0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	if !c.DisableAutoTLS || c.AgentToken != "0123456789abcdef0123456789abcdef" {
		t.Errorf("DisableAutoTLS = %t, AgentToken = %q", c.DisableAutoTLS, c.AgentToken)
	}
	if c, _ := ConfigFromCmdline(base); c.DisableAutoTLS {
		t.Error("auto-TLS is off by default; IPA's enable_auto_tls defaults to true")
	}
	for _, bad := range []string{"ipa-enable-auto-tls=maybe"} {
		if _, err := ConfigFromCmdline(base + bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// nextHeartbeat waits for the next heartbeat the scripted driver accepted.
func nextHeartbeat(t *testing.T, api *scriptedIronic) heartbeat {
	t.Helper()
	select {
	case hb := <-api.hbCh:
		return hb
	case <-time.After(20 * time.Second):
		t.Fatal("no heartbeat within 20 s")
	}
	return heartbeat{}
}
