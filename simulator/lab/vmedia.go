package lab

import (
	"context"
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
