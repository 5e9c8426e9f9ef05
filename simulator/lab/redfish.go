package lab

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/ironlab/ironlab/simulator/redfish"
)

// redfishService is one Redfish listener of the lab: a group's nodes share
// it (one service, many systems, as sushy-tools serves them), or a node
// has its own (Hardware.RedfishListen per-node).
type redfishService struct {
	svc *redfish.Service
	ca  string // the service's certificate, for redfish_verify_ca ("" for http)
}

// redfishAccess serves node n as a system of a Redfish service: its
// group's, started on first use, or with RedfishPerNode one of its own.
// The service speaks https with a self-signed certificate written to
// StateDir/redfish/<group>-ca.pem (per node: StateDir/redfish/nodes/<node>-ca.pem),
// or http with Spec.RedfishHTTP. With Spec.RedfishPort, listeners take
// consecutive ports from it in the order they start.
func (l *Lab) redfishAccess(n *Node, g GroupSpec) error {
	if l.redfish == nil {
		l.redfish = map[string]*redfishService{}
	}
	key, what, ca := "group/"+g.Name, "group "+g.Name, g.Name+"-ca.pem"
	if g.RedfishListen == RedfishPerNode {
		key, what, ca = "node/"+n.Name, "node "+n.Name, filepath.Join("nodes", n.Name+"-ca.pem")
	}
	rs, ok := l.redfish[key]
	if !ok {
		var err error
		if rs, err = l.startRedfish(n, what, filepath.Join(l.spec.StateDir, "redfish", ca)); err != nil {
			return err
		}
		l.redfish[key] = rs
	}
	if rs.svc.Credentials() != n.BMCCreds {
		return fmt.Errorf("lab %s: node %s: the group's Redfish service has other credentials", l.spec.Name, n.Name)
	}
	sys, err := rs.svc.Add(n.Machine)
	if err != nil {
		return fmt.Errorf("lab %s: node %s: %w", l.spec.Name, n.Name, err)
	}
	n.Redfish, n.redfishSvc = sys, rs
	return nil
}

// startRedfish starts one Redfish listener (for what: a group or a node)
// with n's credentials; its CA certificate, for https, goes to caFile.
func (l *Lab) startRedfish(n *Node, what, caFile string) (*redfishService, error) {
	svc, err := redfish.New(redfish.Options{Credentials: n.BMCCreds, TLS: !l.spec.RedfishHTTP, Logger: l.log})
	if err != nil {
		return nil, fmt.Errorf("lab %s: %s: Redfish service: %w", l.spec.Name, what, err)
	}
	addr := "127.0.0.1:0"
	if l.spec.RedfishPort != 0 {
		addr = fmt.Sprintf("127.0.0.1:%d", l.spec.RedfishPort+len(l.redfish))
	}
	if err := svc.Start(addr); err != nil {
		return nil, fmt.Errorf("lab %s: %s: %w", l.spec.Name, what, err)
	}
	rs := &redfishService{svc: svc}
	if pem := svc.CACertPEM(); pem != nil {
		rs.ca = caFile
		if err := os.MkdirAll(filepath.Dir(rs.ca), 0o755); err != nil {
			svc.Close()
			return nil, fmt.Errorf("lab %s: %s: %w", l.spec.Name, what, err)
		}
		if err := os.WriteFile(rs.ca, pem, 0o644); err != nil {
			svc.Close()
			return nil, fmt.Errorf("lab %s: %s: write the Redfish CA: %w", l.spec.Name, what, err)
		}
	}
	return rs, nil
}

// RedfishCA is the file of the CA certificate the node's Redfish service
// is signed with ("" for plain http or no Redfish BMC).
func (n *Node) RedfishCA() string {
	if n.Redfish == nil {
		return ""
	}
	return n.redfishSvc.ca
}

// RedfishURL is the base URL of the node's Redfish service ("" when the
// node has no Redfish BMC).
func (n *Node) RedfishURL() string {
	if n.Redfish == nil {
		return ""
	}
	return n.redfishSvc.svc.URL()
}

// RedfishCurl is a curl command line that reads the node's system.
func (n *Node) RedfishCurl() string {
	if n.Redfish == nil {
		return ""
	}
	ca := ""
	if n.redfishSvc.ca != "" {
		ca = " --cacert " + n.redfishSvc.ca
	}
	return fmt.Sprintf("curl -s%s -u %s:%s %s%s", ca, n.BMCCreds.Username, n.BMCCreds.Password, n.RedfishURL(), n.Redfish.Path())
}

func (l *Lab) closeRedfish() error {
	var first error
	for _, rs := range l.redfish {
		if err := rs.svc.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// RedfishClient is an HTTP client that trusts the node's Redfish service
// (its CA for https), for tests and scenario steps that act as a user.
func (n *Node) RedfishClient() (*http.Client, error) {
	if n.Redfish == nil {
		return nil, fmt.Errorf("node %s (%s) has no Redfish BMC", n.Name, n.Driver)
	}
	tr := &http.Transport{}
	if pem := n.redfishSvc.svc.CACertPEM(); pem != nil {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: tr}, nil
}
