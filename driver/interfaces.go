package driver

import (
	"time"

	"github.com/ironlab/ironlab/driver/power"
	"github.com/ironlab/ironlab/driver/power/fake"
	"github.com/ironlab/ironlab/driver/power/ipmitool"
	"github.com/ironlab/ironlab/driver/power/native"
	"github.com/ironlab/ironlab/driver/power/redfish"
	"github.com/ironlab/ironlab/driver/power/ssh"
)

// PowerOptions tune the built-in power interfaces.
type PowerOptions struct {
	// IPMIMinInterval is the least time between two ipmitool commands to one
	// BMC (Ironic's [ipmi]min_command_interval, 5 s).
	IPMIMinInterval time.Duration
	// IPMIRetryTimeout is how long ipmitool commands that fail with a
	// retryable error are retried (Ironic's command_retry_timeout, 60 s).
	IPMIRetryTimeout time.Duration
	// PollInterval is the pause between power status polls after a change.
	PollInterval time.Duration
}

// StandardPowerInterfaces are the power interfaces every driver class of the
// lab needs: fake (FakePower), ipmitool (the real binary), native (Go IPMI)
// ssh (virsh over SSH) and redfish (gofish over HTTPS).
func StandardPowerInterfaces(o PowerOptions) map[string]power.Interface {
	return map[string]power.Interface{
		"fake":     fake.New(),
		"ipmitool": ipmitool.New(ipmitool.Config{MinCommandInterval: o.IPMIMinInterval, CommandRetryTimeout: o.IPMIRetryTimeout}),
		"native":   native.New(native.Config{PollInterval: o.PollInterval}),
		"ssh":      ssh.New(ssh.Config{PollInterval: o.PollInterval}),
		"redfish":  redfish.New(redfish.Config{PollInterval: o.PollInterval}),
	}
}
