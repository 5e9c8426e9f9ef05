package conductor_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlab/ironlab/driver/conductor"
	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/deploy"
	"github.com/ironlab/ironlab/driver/deploy/agent"
	"github.com/ironlab/ironlab/driver/store"
	"github.com/ironlab/ironlab/internal/shacrypt"
)

// deployed takes a node to active through a scripted agent.
func deployed(t *testing.T, l *lab) *store.Node {
	t.Helper()
	n := l.enroll(t, states.Available)
	l.act(t, n.UUID, "active", nil)
	l.lookup(t)
	l.heartbeat(t, n.UUID)
	l.agent.finish(agent.StatusSucceeded, "")
	l.heartbeat(t, n.UUID)
	wantState(t, l.node(t, n.UUID), states.Active)
	return n
}

func (l *lab) rescue(t *testing.T, id, password string) error {
	t.Helper()
	err := l.c.Provision(context.Background(), id, "rescue", conductor.ProvisionArgs{RescuePassword: &password})
	l.c.Wait()
	return err
}

// bootDevices lists the boot devices set on the node since event index from.
func bootDevices(t *testing.T, l *lab, id string, from int) ([]string, int) {
	t.Helper()
	evs, err := l.st.ListEvents(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range evs[from:] {
		if e.Kind == store.KindPower && e.Event == "set boot device" {
			var d struct {
				Device     string `json:"device"`
				Persistent bool   `json:"persistent"`
			}
			_ = json.Unmarshal(e.Detail, &d)
			out = append(out, d.Device+map[bool]string{true: " persistent", false: " once"}[d.Persistent])
		}
	}
	return out, len(evs)
}

// Rescue as Ironic's agent rescue does it: the node boots the agent, whose
// heartbeat in rescue wait gets rescue.finalize_rescue with the SHA-512
// crypt hash of the password; unrescue boots the disk again.
func TestRescueThenUnrescue(t *testing.T) {
	l := newLab(t, nil)
	n := deployed(t, l)
	_, mark := bootDevices(t, l, n.UUID, 0)
	if err := l.rescue(t, n.UUID, "rescue me"); err != nil {
		t.Fatalf("rescue: %v", err)
	}
	got := l.node(t, n.UUID)
	wantState(t, got, states.RescueWait)
	if got.TargetProvisionState != states.Rescue || got.PowerState != "power on" {
		t.Errorf("rescue wait: target %q, power %q; want rescue, power on", got.TargetProvisionState, got.PowerState)
	}
	hash, _ := got.InstanceInfo[deploy.HashedRescuePasswordKey].(string)
	if !strings.HasPrefix(hash, "$5$") || !shacrypt.Verify(hash, "rescue me") {
		t.Fatalf("instance_info.hashed_rescue_password = %q, want the SHA-256 crypt hash of the password (Ironic 21.4's default)", hash)
	}
	if devs, _ := bootDevices(t, l, n.UUID, mark); !cmp.Equal(devs, []string{"pxe once"}) {
		t.Errorf("boot devices set for rescue = %v, want [pxe once]", devs)
	}
	// The rescue ramdisk may look up in rescue wait (restrict_lookup).
	l.lookup(t)
	l.heartbeat(t, n.UUID)
	got = l.node(t, n.UUID)
	wantState(t, got, states.Rescue)
	names := l.agent.commandNames()
	if last := names[len(names)-1]; last != "rescue.finalize_rescue" {
		t.Fatalf("last agent command %q, want rescue.finalize_rescue (all: %v)", last, names)
	}
	params := l.agent.params[len(l.agent.params)-1]
	if diff := cmp.Diff(map[string]any{"rescue_password": hash, "hashed": true}, params); diff != "" {
		t.Errorf("finalize_rescue params (-want +got):\n%s", diff)
	}
	if _, ok := got.InstanceInfo[deploy.RescuePasswordKey]; ok || got.InstanceInfo[deploy.HashedRescuePasswordKey] != nil {
		t.Errorf("the rescue password stays in instance_info after rescue: %v", got.InstanceInfo)
	}
	if got.TargetProvisionState != "" || got.LastError != "" {
		t.Errorf("rescue: target %q, last_error %q", got.TargetProvisionState, got.LastError)
	}
	if got.InstanceInfo["image_source"] == nil {
		t.Errorf("rescue forgot the instance: instance_info %v", got.InstanceInfo)
	}

	_, mark = bootDevices(t, l, n.UUID, 0)
	l.act(t, n.UUID, "unrescue", nil)
	got = l.node(t, n.UUID)
	wantState(t, got, states.Active)
	if devs, _ := bootDevices(t, l, n.UUID, mark); !cmp.Equal(devs, []string{"disk persistent"}) {
		t.Errorf("boot devices set for unrescue = %v, want [disk persistent]", devs)
	}
	if got.PowerState != "power on" || got.Agent.URL != "" || got.Agent.Token != "" {
		t.Errorf("after unrescue: power %q, agent_url %q, token set %v; want power on and the rescue agent forgotten", got.PowerState, got.Agent.URL, got.Agent.Token != "")
	}
	evs, _ := l.st.ListEvents(context.Background(), n.UUID)
	var path []string
	for _, e := range evs {
		if e.Kind == store.KindProvision && e.FromState != e.ToState && e.FromState != "" {
			path = append(path, e.ToState)
		}
	}
	want := []string{states.Rescuing, states.RescueWait, states.Rescuing, states.Rescue, states.Unrescuing, states.Active}
	if len(path) < len(want) || !cmp.Equal(path[len(path)-len(want):], want) {
		t.Errorf("state history ends %v, want ... %v", path, want)
	}
}

// noRescue is a deploy interface without rescue, as Ironic's no-rescue.
type noRescue struct{ deploy.Interface }

func (noRescue) Name() string { return "pxe" }

func TestRescueRefused(t *testing.T) {
	l := newLab(t, func(c *conductor.Config, _ *agent.Config) {})
	l.c.Config().DeployInterfaces["pxe"] = noRescue{agent.New(agent.Config{})}
	n := deployed(t, l)
	ctx := context.Background()
	pw, blank := "pw", "  "
	tests := []struct {
		name, target string
		args         conductor.ProvisionArgs
		want         string
	}{
		{"no password", "rescue", conductor.ProvisionArgs{}, `A non-empty "rescue_password" is required`},
		{"blank password", "rescue", conductor.ProvisionArgs{RescuePassword: &blank}, `A non-empty "rescue_password" is required`},
		{"password with deploy", "rebuild", conductor.ProvisionArgs{RescuePassword: &pw}, `"rescue_password" is only valid when setting target provision state to rescue`},
		{"unrescue from active", "unrescue", conductor.ProvisionArgs{}, `while it is in state "active"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := l.c.Provision(ctx, n.UUID, tc.target, tc.args)
			if !errors.Is(err, conductor.ErrInvalidParameter) && !errors.Is(err, conductor.ErrInvalidRequest) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Provision(%s) = %v, want a 400 saying %q", tc.target, err, tc.want)
			}
			wantState(t, l.node(t, n.UUID), states.Active)
		})
	}
	t.Run("maintenance", func(t *testing.T) {
		if err := l.c.SetMaintenance(ctx, n.UUID, true, "test"); err != nil {
			t.Fatal(err)
		}
		defer l.c.SetMaintenance(ctx, n.UUID, false, "")
		err := l.c.Provision(ctx, n.UUID, "rescue", conductor.ProvisionArgs{RescuePassword: &pw})
		if !errors.Is(err, conductor.ErrInvalidParameter) || !strings.Contains(err.Error(), "because it's in maintenance mode") {
			t.Fatalf("rescue in maintenance = %v", err)
		}
	})
	t.Run("deploy interface without rescue", func(t *testing.T) {
		if _, err := l.c.UpdateNode(ctx, n.UUID, func(n *store.Node) error { n.Driver = "fake_pxe"; return nil }); err != nil {
			t.Fatal(err)
		}
		err := l.c.Provision(ctx, n.UUID, "rescue", conductor.ProvisionArgs{RescuePassword: &pw})
		if !errors.Is(err, conductor.ErrInvalidParameter) || !strings.Contains(err.Error(), "Driver fake_pxe does not support rescue") {
			t.Fatalf("rescue of a fake_pxe node = %v, want a 400 saying the driver does not support rescue", err)
		}
		got := l.node(t, n.UUID)
		wantState(t, got, states.Active)
		if _, ok := got.InstanceInfo[deploy.RescuePasswordKey]; ok {
			t.Errorf("a refused rescue left the password in instance_info")
		}
	})
}

// A finalize_rescue that fails, and a rescue ramdisk that never calls
// back, end in rescue failed with Ironic's words, the node powered off
// and the password gone; from there unrescue brings the instance back.
func TestRescueFailures(t *testing.T) {
	t.Run("finalize_rescue failed", func(t *testing.T) {
		l := newLab(t, nil)
		n := deployed(t, l)
		l.agent.failCmd = "finalize_rescue"
		if err := l.rescue(t, n.UUID, "pw"); err != nil {
			t.Fatal(err)
		}
		l.lookup(t)
		l.heartbeat(t, n.UUID)
		got := l.node(t, n.UUID)
		wantState(t, got, states.RescueFailed)
		want := "Node failed to perform rescue operation: Failed to rescue instance None for node " + n.UUID +
			": Agent returned bad result for command finalize_rescue: Command execution failed: finalize_rescue failed in the test"
		if got.LastError != want {
			t.Errorf("last_error = %q\nwant        %q", got.LastError, want)
		}
		if got.PowerState != "power off" || got.InstanceInfo[deploy.HashedRescuePasswordKey] != nil {
			t.Errorf("rescue failed: power %q, instance_info %v; want power off and no password", got.PowerState, got.InstanceInfo)
		}
		l.act(t, n.UUID, "unrescue", nil)
		wantState(t, l.node(t, n.UUID), states.Active)
	})
	t.Run("rescue_callback_timeout", func(t *testing.T) {
		l := newLab(t, func(c *conductor.Config, _ *agent.Config) {
			c.RescueCallbackTimeout, c.RescuePasswordHash = time.Minute, shacrypt.SHA512
		})
		n := deployed(t, l)
		if err := l.rescue(t, n.UUID, "pw"); err != nil {
			t.Fatal(err)
		}
		if h, _ := l.node(t, n.UUID).InstanceInfo[deploy.HashedRescuePasswordKey].(string); !strings.HasPrefix(h, "$6$") || !shacrypt.Verify(h, "pw") {
			t.Errorf("with sha512 the hash is %q, want $6$...", h)
		}
		if err := l.c.Check(context.Background(), time.Now().Add(30*time.Second)); err != nil {
			t.Fatal(err)
		}
		wantState(t, l.node(t, n.UUID), states.RescueWait)
		if err := l.c.Check(context.Background(), time.Now().Add(2*time.Minute)); err != nil {
			t.Fatal(err)
		}
		got := l.node(t, n.UUID)
		wantState(t, got, states.RescueFailed)
		if got.LastError != "Timeout reached while waiting for rescue ramdisk callback for node" || got.PowerState != "power off" {
			t.Errorf("rescue timeout: last_error %q, power %q", got.LastError, got.PowerState)
		}
		// A failed rescue may be rescued again.
		if err := l.rescue(t, n.UUID, "again"); err != nil {
			t.Fatalf("rescue from rescue failed: %v", err)
		}
		wantState(t, l.node(t, n.UUID), states.RescueWait)
	})
}

// abort in rescue wait is rescue failed with Ironic's words and no
// password left; a rescued node can be undeployed (and is cleaned).
func TestRescueAbortAndUndeploy(t *testing.T) {
	l := newLab(t, nil)
	n := deployed(t, l)
	if err := l.rescue(t, n.UUID, "pw"); err != nil {
		t.Fatal(err)
	}
	l.act(t, n.UUID, "abort", nil)
	got := l.node(t, n.UUID)
	wantState(t, got, states.RescueFailed)
	if got.LastError != "By request, the rescue operation was aborted." || got.InstanceInfo[deploy.HashedRescuePasswordKey] != nil {
		t.Errorf("aborted rescue: last_error %q, instance_info %v", got.LastError, got.InstanceInfo)
	}
	if err := l.rescue(t, n.UUID, "pw"); err != nil {
		t.Fatal(err)
	}
	l.lookup(t)
	l.heartbeat(t, n.UUID)
	wantState(t, l.node(t, n.UUID), states.Rescue)
	l.act(t, n.UUID, "deleted", nil)
	got = l.node(t, n.UUID)
	if got.ProvisionState != states.CleanWait && got.ProvisionState != states.Available {
		t.Fatalf("undeploy of a rescued node: %q (last_error %q), want cleaning under way", got.ProvisionState, got.LastError)
	}
	if got.InstanceInfo["image_source"] != nil {
		t.Errorf("undeploy kept the instance: %v", got.InstanceInfo)
	}
}
