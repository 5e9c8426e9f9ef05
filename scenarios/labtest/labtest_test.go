package labtest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The policy is checked from the outside: each case runs this test binary
// again, once with CI=true and once without, and reads what go test says.

// helperEnv names the case TestPolicyHelper plays in the child process.
const helperEnv = "LABTEST_HELPER"

func TestPolicyHelper(t *testing.T) {
	switch os.Getenv(helperEnv) {
	case "":
		t.Skip("run by TestPolicy")
	case "missing-tool":
		t.Setenv("PATH", t.TempDir()) // no ipmitool here
		Require(t, "ipmitool")
		t.Log("after Require: not reached")
	case "unknown-tool":
		Require(t, "no-such-tool-xyz")
	case "present-tool":
		if p := Require(t, "/usr/bin/python3"); p != "/usr/bin/python3" {
			t.Errorf("Require returned %q", p)
		}
		t.Log("tool found")
	case "reduced":
		Reduced(t, "group %s skipped", "g1")
		t.Log("after Reduced")
	case "binary-without-main":
		Binary(t)
	}
}

func TestPolicy(t *testing.T) {
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("the present-tool case uses /usr/bin/python3")
	}
	for _, tc := range []struct {
		helper string
		ci     bool
		pass   bool
		want   []string
	}{
		{"missing-tool", false, true, []string{"--- SKIP", "ipmitool is missing", "apt-get install ipmitool"}},
		{"missing-tool", true, false, []string{"--- FAIL", "ipmitool is missing under CI=true", "apt-get install ipmitool"}},
		{"unknown-tool", false, false, []string{"--- FAIL", `no install command known for this tool`}},
		{"present-tool", true, true, []string{"--- PASS", "tool found"}},
		{"reduced", false, true, []string{"--- PASS", "REDUCED: group g1 skipped", "after Reduced"}},
		{"reduced", true, false, []string{"--- FAIL", "reduced test under CI=true: group g1 skipped"}},
		{"binary-without-main", false, false, []string{"--- FAIL", "must call labtest.Main"}},
	} {
		name := tc.helper
		if tc.ci {
			name += "/CI"
		}
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestPolicyHelper$", "-test.v")
			env := []string{helperEnv + "=" + tc.helper}
			for _, e := range os.Environ() {
				if !strings.HasPrefix(e, "CI=") {
					env = append(env, e)
				}
			}
			if tc.ci {
				env = append(env, "CI=true")
			}
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			if pass := err == nil; pass != tc.pass {
				t.Errorf("exit: %v, want pass=%v\n%s", err, tc.pass, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(string(out), "not reached") {
				t.Errorf("the test went on after a missing requirement:\n%s", out)
			}
		})
	}
}
