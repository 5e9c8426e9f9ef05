package lab

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"

	"github.com/ironlab/ironlab/fakeagent/pxedeploy"
	"github.com/ironlab/ironlab/simulator"
	"github.com/ironlab/ironlab/simulator/sshpower"
)

// hosts are the lab's shared endpoints besides the BMCs: the deploy
// ramdisks' Mux (under the agents' listener) and the SSH virtualization host.
type hosts struct {
	pxeOnce sync.Once
	pxe     *pxedeploy.Mux
	ssh     *sshpower.Server
}

// BootDir is the lab's boot folder: per-MAC boot configs the PXE deploy
// writes (StateDir/boot).
func (l *Lab) BootDir() string { return filepath.Join(l.spec.StateDir, "boot") }

// SSHAddr is the SSH host's address (empty when no node powers through SSH).
func (l *Lab) SSHAddr() string {
	if l.hosts.ssh == nil {
		return ""
	}
	return l.hosts.ssh.Addr().String()
}

// pxeMux serves every deploy ramdisk under <agents>/pxe/<node-uuid>.
func (l *Lab) pxeMux() *pxedeploy.Mux {
	l.hosts.pxeOnce.Do(func() { l.hosts.pxe = pxedeploy.NewMux("http://" + l.agentAddr + "/pxe") })
	return l.hosts.pxe
}

// agentHandler routes /pxe/... to the deploy ramdisks, the rest to the agents.
func (l *Lab) agentHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/pxe/") {
			l.pxeMux().ServeHTTP(w, r)
			return
		}
		l.mux.ServeHTTP(w, r)
	})
}

// sshAccess gives node n its login on the lab's SSH host (one
// for the lab, like one virtualization host), listening from the first
// SSH-powered node on; it serves from Start.
func (l *Lab) sshAccess(n *Node) error {
	if l.hosts.ssh == nil {
		srv, err := sshpower.New(sshpower.Config{
			Addr: "127.0.0.1:0", Logger: l.log,
			Machines: func() []simulator.Machine {
				ms := make([]simulator.Machine, 0, len(l.nodes))
				for _, n := range l.nodes {
					ms = append(ms, n.Machine)
				}
				return ms
			},
		})
		if err != nil {
			return fmt.Errorf("lab %s: SSH host: %w", l.spec.Name, err)
		}
		l.hosts.ssh = srv
	}
	l.hosts.ssh.AddUser(sshpower.User{Name: n.BMCCreds.Username, Password: n.BMCCreds.Password})
	// The VM is found by the node's UUID (virsh domname), as the driver's
	// SSHPower does without ssh_domain.
	n.SSH = &SSHLogin{Address: "127.0.0.1", Port: l.hosts.ssh.Addr().Port, Username: n.BMCCreds.Username, Password: n.BMCCreds.Password}
	return nil
}

func (l *Lab) startSSH() {
	if l.hosts.ssh != nil {
		l.hosts.ssh.Start()
	}
}

func (l *Lab) closeSSH() error {
	if l.hosts.ssh == nil {
		return nil
	}
	return l.hosts.ssh.Close()
}
