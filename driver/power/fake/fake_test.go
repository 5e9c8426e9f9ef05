package fake

import (
	"context"
	"testing"

	"github.com/ironlab/ironlab/driver/power"
)

func TestFakePowerReportsRecordedState(t *testing.T) {
	ctx := context.Background()
	p := New()
	tests := []struct {
		name string
		info power.DriverInfo
		want power.State
	}{
		{"nothing recorded", power.DriverInfo{}, power.Off},
		{"recorded on", power.DriverInfo{power.RecordedStateKey: "power on"}, power.On},
		{"recorded off", power.DriverInfo{power.RecordedStateKey: "power off"}, power.Off},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := p.GetPowerState(ctx, tc.info)
			if err != nil || got != tc.want {
				t.Errorf("GetPowerState = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if err := p.SetPowerState(ctx, nil, "sideways"); err == nil {
		t.Error("SetPowerState(sideways) succeeded")
	}
	if err := p.SetBootDevice(ctx, nil, power.Disk, power.BootOptions{Persistent: true}); err != nil {
		t.Error(err)
	}
}
