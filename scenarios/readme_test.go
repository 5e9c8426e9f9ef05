package scenarios

import (
	"os"
	"strings"
	"testing"
)

// The README's scenario example must parse: users paste it.
func TestReadmeScenarioExampleParses(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "name: my-deploy")
	if i < 0 {
		t.Fatal("README has no scenario example (name: my-deploy)")
	}
	j := strings.Index(s[i:], "```")
	sc, err := Parse("README.md", []byte(s[i:i+j]))
	if err != nil {
		t.Fatalf("the README's scenario example does not parse: %v", err)
	}
	if len(sc.Steps) < 5 || sc.Lab.Groups[0].Driver != "agent_ipmitool" {
		t.Errorf("example parsed oddly: %+v", sc.Lab.Groups)
	}
}

// Every expectation a scenario can state is documented in the README's
// scenario section (an expect_<key>.go file without its line there fails).
func TestReadmeDocumentsEveryExpectation(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i, j := strings.Index(s, "## Scenario files"), strings.Index(s, "### Faults")
	if i < 0 || j < i {
		t.Fatal("README has no scenario files section before its faults section")
	}
	for key := range expectations {
		if sec := s[i:j]; !strings.Contains(sec, "`"+key) && !strings.Contains(sec, " "+key+":") {
			t.Errorf("the README's scenario section does not document expectation %q", key)
		}
	}
}

// The README's example of several conductors parses.
func TestReadmeConductorsExampleParses(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "name: my-conductors")
	if i < 0 {
		t.Fatal("README has no conductors example (name: my-conductors)")
	}
	j := strings.Index(s[i:], "```")
	sc, err := Parse("README.md", []byte(s[i:i+j]))
	if err != nil {
		t.Fatalf("the README's conductors example does not parse: %v", err)
	}
	if sc.Lab.Conductors != 3 || sc.Lab.Store != "postgres" {
		t.Errorf("example parsed oddly: %d conductors on %q", sc.Lab.Conductors, sc.Lab.Store)
	}
}
