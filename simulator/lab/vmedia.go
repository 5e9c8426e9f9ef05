package lab

import (
	"context"
	"errors"
	"fmt"

	"github.com/ironlab/ironlab/fakeagent"
	"github.com/ironlab/ironlab/simulator"
	"github.com/ironlab/ironlab/simulator/fake"
)

var _ fake.CDBooter = (*Lab)(nil)

// CDBoot runs what a fake machine's virtual CD boots when the CD's boot
// loader carries a kernel command line (an ISO that Ironic's
// redfish-virtual-media built): the in-process agent, holding the
// ipa-agent-token of that line, since Ironic hands no token out at lookup
// to an agent it booted from virtual media.
func (l *Lab) CDBoot(ctx context.Context, m simulator.Machine, cmdline string) error {
	n, ok := l.byName[m.Name()]
	if !ok {
		return fmt.Errorf("%w: %s", simulator.ErrNoSuchMachine, m.Name())
	}
	o, err := fakeagent.ParseIPAOptions(cmdline, nil)
	if err != nil {
		return fmt.Errorf("node %s: virtual CD: %w", n.Name, err)
	}
	return l.runAgentWithToken(ctx, n, m, o.AgentToken)
}

// isoBackend is a backend whose machines boot a real agent ISO from their
// virtual CD (libvirt).
type isoBackend interface {
	agentISO(ctx context.Context, n *Node) (path string, err error)
}

// AgentISOURL builds the ISO that boots node n's agent from a virtual CD,
// as Ironic's redfish-virtual-media builds one (ISOLINUX, the agent
// ramdisk, the node's agent command line), and serves it on the image
// server; the URL is as the host, and so the node's BMC, reaches it (a
// Redfish InsertMedia fetches it). Call it after Start. The fake backend
// has none: its machines boot an in-process agent from any CD.
func (l *Lab) AgentISOURL(ctx context.Context, n *Node) (string, error) {
	b, ok := l.backend.(isoBackend)
	if !ok {
		return "", errors.New("the fake backend builds no agent ISO: its machines boot an in-process agent from any virtual CD (give virtual_media a lab image)")
	}
	path, err := b.agentISO(ctx, n)
	if err != nil {
		return "", err
	}
	return l.Images.AddFilePath("agent-"+n.Name+".iso", path), nil
}
