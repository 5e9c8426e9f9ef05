package pxe

import (
	"context"
	"log/slog"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/power"
	"github.com/ironlab/ironlab/driver/power/fake"
	"github.com/ironlab/ironlab/driver/store"
)

// task is a locked node without a conductor.
type task struct{ node *store.Node }

func (t *task) Node() *store.Node                                          { return t.node }
func (t *task) Ports() []*store.Port                                       { return nil }
func (t *task) PowerInterface() power.Interface                            { return fake.New() }
func (t *task) SetPower(context.Context, power.State) error                { return nil }
func (t *task) GetPower(context.Context) (power.State, error)              { return power.On, nil }
func (t *task) SetBootDevice(context.Context, power.Device, bool) error    { return nil }
func (t *task) FastTrack(context.Context) bool                             { return false }
func (t *task) Record(ctx context.Context, kind, event, msg string, d any) {}
func (t *task) Logger() *slog.Logger                                       { return slog.New(slog.DiscardHandler) }

type applied struct{ Event, Fail string }

// TestCallbackOutcomes: what pass_deploy_info makes of a node, before any
// disk is touched: a stale call-back changes nothing, a ramdisk's error
// resumes the node and fails it with the ramdisk's words.
func TestCallbackOutcomes(t *testing.T) {
	tests := []struct {
		name, state, body string
		want              []applied
	}{
		{"wrong key", states.DeployWait, `{"address": "http://127.0.0.1:1", "key": "other"}`, []applied{{}}},
		{"node no longer waits", states.Active, `{"address": "http://127.0.0.1:1", "key": "k"}`, []applied{{}}},
		{"still deploying", states.Deploying, `{"address": "http://127.0.0.1:1", "key": "k"}`, []applied{{}}},
		{"not JSON", states.DeployWait, `address=x`, []applied{{}}},
		{"ramdisk error while deploying", states.DeployWait, `{"key": "k", "error": "no disk found"}`,
			[]applied{{Event: states.EvResume}, {Fail: "Deploy ramdisk of node n1 reported an error: no disk found"}}},
		{"ramdisk error while cleaning", states.CleanWait, `{"key": "k", "error": "no disk found"}`,
			[]applied{{Event: states.EvResume}, {Fail: "Deploy ramdisk of node n1 reported an error: no disk found"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := New(Config{BootDir: t.TempDir()})
			n := &store.Node{UUID: "n1", ProvisionState: tc.state, DriverInternalInfo: map[string]any{keyField: "k"},
				CleanPlan: &store.CleanPlan{Manual: true}}
			tk := &task{node: n}
			out, err := d.VendorPassthru(context.Background(), tk, Method, []byte(tc.body))
			var got []applied
			for i := 0; ; i++ {
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, applied{Event: out.Event, Fail: out.Fail})
				if out.Event != "" {
					if n.ProvisionState, err = states.Next(n.ProvisionState, out.Event); err != nil {
						t.Fatal(err)
					}
				}
				if out.Then == nil || out.Fail != "" || i > 10 {
					break
				}
				out, err = out.Then(context.Background(), tk)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("outcomes (-want +got):\n%s", diff)
			}
			failed := len(got) > 0 && got[len(got)-1].Fail != ""
			if failed && (n.DriverInternalInfo[keyField] != nil || (tc.state == states.CleanWait) != (n.CleanPlan == nil)) {
				t.Errorf("after the failure: deploy key %v, clean plan %v (a failed clean forgets its plan)", n.DriverInternalInfo[keyField], n.CleanPlan)
			}
			if !failed && n.DriverInternalInfo[keyField] != "k" {
				t.Errorf("a stale call-back changed the deploy key: %v", n.DriverInternalInfo)
			}
		})
	}
}
