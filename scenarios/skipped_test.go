package scenarios

import (
	"context"
	"strings"
	"testing"
)

// A group whose driver needs a tool this machine lacks is never dropped in
// silence: with FailOnMissingTools (what CI=true sets) the run fails naming
// the group; without, the progress and the summary say which group was
// skipped and why, and the result lists it.
func TestMissingToolSkipsGroupVisibly(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // no ipmitool here
	src := []byte(`name: skip-visible
lab:
  heartbeat_timeout: 4s
  automated_clean: false
  images: [{id: os, size: 1MiB}]
  groups:
    - {name: fa, count: 1, driver: fake_agent, disk_size: 8MiB}
    - {name: ai, count: 1, driver: agent_ipmitool, disk_size: 8MiB}
steps:
  - enroll: {}
  - manage: {}
  - wait: {state: manageable, timeout: 30s}
  - expect: {state: manageable}
`)
	s, err := Parse("skip.yaml", src)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("fail", func(t *testing.T) {
		var out strings.Builder
		_, err := Run(context.Background(), s, Options{StartDriver: builtinDriver, FailOnMissingTools: true, Out: &out, ImageCache: t.TempDir(), ResultsDir: t.TempDir()})
		if err == nil || !strings.Contains(err.Error(), "group ai") || !strings.Contains(err.Error(), "ipmitool") {
			t.Fatalf("run with FailOnMissingTools: err %v, want one naming group ai and ipmitool\n%s", err, out.String())
		}
	})
	t.Run("skip", func(t *testing.T) {
		var out strings.Builder
		res, err := Run(context.Background(), s, Options{StartDriver: builtinDriver, Out: &out, ImageCache: t.TempDir(), ResultsDir: t.TempDir()})
		if err != nil || !res.Passed {
			t.Fatalf("run: %v\n%s", err, out.String())
		}
		if len(res.Nodes) != 1 || len(res.Skipped) != 1 || !strings.HasPrefix(res.Skipped[0], "ai: ipmitool is not installed") {
			t.Errorf("nodes %d, skipped %q; want fa's node only and ai skipped for ipmitool", len(res.Nodes), res.Skipped)
		}
		if !strings.Contains(out.String(), "!! skipping group ai (1 agent_ipmitool nodes): ipmitool is not installed") {
			t.Errorf("progress does not say group ai was skipped:\n%s", out.String())
		}
		var sum strings.Builder
		PrintSummary(&sum, res)
		if !strings.Contains(sum.String(), "skipped group ai: ipmitool is not installed (apt-get install ipmitool") {
			t.Errorf("summary does not say group ai was skipped:\n%s", sum.String())
		}
	})
}
