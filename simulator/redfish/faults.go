package redfish

import (
	"fmt"
	"time"

	"github.com/ironlab/ironlab/simulator/bmc"
)

// Faults are a Redfish BMC's injected failures. Scenarios set them as data
// (yaml or json) and may change them while the service runs. Faults of a
// system apply to every request on its resources (Systems/{id},
// Managers/{id}, Chassis/{id}) and fail_tasks to the updates that target
// it; the service's own faults apply to every request.
type Faults struct {
	// Delay holds every answer this long (a slow BMC).
	Delay bmc.Duration `json:"delay,omitempty" yaml:"delay,omitempty"`
	// ServerError answers requests with this 5xx status (500..599) in the
	// Redfish error shape; the request does nothing.
	ServerError int `json:"server_error,omitempty" yaml:"server_error,omitempty"`
	// ServerErrorCount limits ServerError to the next N requests (0: all).
	ServerErrorCount int `json:"server_error_count,omitempty" yaml:"server_error_count,omitempty"`
	// PowerLate acknowledges a reset at once and changes the power this
	// much later (sushy-tools' fake driver waits 1-11 s).
	PowerLate bmc.Duration `json:"power_late,omitempty" yaml:"power_late,omitempty"`
	// RefuseCredentials rejects every login and every Basic-auth request,
	// with the right password too.
	RefuseCredentials bool `json:"refuse_credentials,omitempty" yaml:"refuse_credentials,omitempty"`
	// InsertMediaFail answers InsertMedia (and PATCH Image) with 500; the
	// drive stays as it was.
	InsertMediaFail bool `json:"insert_media_fail,omitempty" yaml:"insert_media_fail,omitempty"`
	// FailTasks makes every task (firmware updates) end in Exception.
	FailTasks bool `json:"fail_tasks,omitempty" yaml:"fail_tasks,omitempty"`
}

// Validate reports a fault setting no BMC could have.
func (f Faults) Validate() error {
	if f.ServerError != 0 && (f.ServerError < 500 || f.ServerError > 599) {
		return fmt.Errorf("redfish fault server_error %d: want a 5xx status", f.ServerError)
	}
	if f.ServerErrorCount < 0 {
		return fmt.Errorf("redfish fault server_error_count %d: want >= 0", f.ServerErrorCount)
	}
	if f.Delay < 0 || f.PowerLate < 0 {
		return fmt.Errorf("redfish fault delay/power_late: want >= 0")
	}
	return nil
}

// merge is what a request on a system sees: the service's faults and the
// system's, either one's failure applying.
func merge(a, b Faults) Faults {
	out := a
	out.Delay = bmc.Duration(max(time.Duration(a.Delay), time.Duration(b.Delay)))
	out.PowerLate = bmc.Duration(max(time.Duration(a.PowerLate), time.Duration(b.PowerLate)))
	out.RefuseCredentials = a.RefuseCredentials || b.RefuseCredentials
	out.InsertMediaFail = a.InsertMediaFail || b.InsertMediaFail
	out.FailTasks = a.FailTasks || b.FailTasks
	return out
}
