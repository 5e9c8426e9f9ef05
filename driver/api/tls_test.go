package api_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/ironlab/ironlab/driver"
)

func selfSigned(t testing.TB) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "agent"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// TestRequireTLSAndAgentVerifyCA: --require-tls refuses http callback URLs
// with Ironic's words, after the token check as Ironic does; the
// certificate of an https agent is stored, and a changed one is refused.
func TestRequireTLSAndAgentVerifyCA(t *testing.T) {
	s := newServer(t, func(c *driver.Config) { c.RequireTLS = true })
	r := s.do(t, "POST", "/v1/nodes", "", `{"name": "node-a", "driver": "fake_agent", `+image+`}`)
	if r.status != 201 {
		t.Fatal(r.body)
	}
	id := r.json["uuid"].(string)
	s.do(t, "POST", "/v1/ports", "", `{"address": "52:54:00:00:00:0b", "node_uuid": "node-a"}`)
	s.do(t, "PUT", "/v1/nodes/node-a/states/provision", "", `{"target": "active"}`)
	r = s.do(t, "GET", "/v1/lookup?addresses=52:54:00:00:00:0b", "1.68", "")
	if r.status != 200 {
		t.Fatal(r.body)
	}
	token := r.json["config"].(map[string]any)["agent_token"].(string)
	ca, other := selfSigned(t), selfSigned(t)
	body := func(url, token, ca string) string {
		b, _ := json.Marshal(map[string]any{"callback_url": url, "agent_token": token, "agent_version": "10.0.0", "agent_verify_ca": ca})
		return string(b)
	}
	hb := "/v1/heartbeat/" + id
	// Nothing listens on port 1: the call-back fails quietly in the background.
	run(t, s, []step{
		{"wrong token is refused first", "POST", hb, "1.68", body("http://127.0.0.1:1", "forged", ca), 400, "token"},
		{"http callback refused", "POST", hb, "1.68", body("http://127.0.0.1:1", token, ca), 400, "TLS is required by configuration"},
		{"not a certificate", "POST", hb, "1.68", body("https://127.0.0.1:1", token, "not a PEM"), 400, "agent_verify_ca"},
		{"https with its certificate", "POST", hb, "1.68", body("https://127.0.0.1:1", token, ca), 202, ""},
		{"certificate changed", "POST", hb, "1.68", body("https://127.0.0.1:1", token, other), 400, `Detected change in ramdisk provided "agent_verify_ca"`},
	})
	r = s.do(t, "POST", hb, "1.68", body("http://127.0.0.1:1", token, ca))
	if msg := errorMessage(t, r); msg != "TLS is required by configuration" {
		t.Errorf("faultstring = %q, want Ironic's exact %q", msg, "TLS is required by configuration")
	}
	r = s.do(t, "GET", "/v1/nodes/"+id, "", "")
	dii := r.json["driver_internal_info"].(map[string]any)
	if got, _ := dii["agent_verify_ca"].(string); strings.TrimSpace(got) != strings.TrimSpace(ca) {
		t.Errorf("driver_internal_info.agent_verify_ca = %q, want the agent's PEM", got)
	}
}
