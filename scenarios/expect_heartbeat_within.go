package scenarios

import (
	"context"
	"fmt"
	"time"

	"github.com/ironlab/ironlab/scenarios/ironic"
	"github.com/ironlab/ironlab/simulator/lab"
)

// `heartbeat_within: 10s`: the driver recorded an agent heartbeat this recently.
type expectHeartbeatWithin string

func init() {
	registerExpectation("heartbeat_within", func() expectation { return new(expectHeartbeatWithin) })
}

func (e *expectHeartbeatWithin) within() (time.Duration, error) {
	d, err := ParseDuration(string(*e))
	if err == nil && d <= 0 {
		err = fmt.Errorf("not positive")
	}
	return d, err
}

func (e *expectHeartbeatWithin) unset() bool { return *e == "" }

func (e *expectHeartbeatWithin) validate(v *validator, p string, _ *Lab) {
	if _, err := e.within(); err != nil {
		v.at(p, "want a positive duration like 10s, got %q", string(*e))
	}
}

func (e *expectHeartbeatWithin) name() string { return "agent heartbeat within " + string(*e) }

func (e *expectHeartbeatWithin) check(_ context.Context, _ *runner, _ *lab.Node, an ironic.Node) string {
	t, ok := an.LastHeartbeat()
	if !ok {
		return "no agent_last_heartbeat recorded"
	}
	within, _ := e.within() // validated
	// agent_last_heartbeat has one-second resolution.
	if age := time.Since(t); age > within+time.Second {
		return fmt.Sprintf("last heartbeat %.1fs ago", age.Seconds())
	}
	return ""
}
