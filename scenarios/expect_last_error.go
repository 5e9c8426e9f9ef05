package scenarios

import (
	"context"
	"fmt"
	"strings"

	"github.com/ironlab/ironlab/scenarios/ironic"
	"github.com/ironlab/ironlab/simulator/lab"
)

// `last_error: text`: the node's last_error contains the text; `""` means
// last_error is empty.
type expectLastError string

func init() { registerExpectation("last_error", func() expectation { return new(expectLastError) }) }

func (e *expectLastError) validate(*validator, string, *Lab) {}

func (e *expectLastError) name() string {
	if *e == "" {
		return "last_error empty"
	}
	return fmt.Sprintf("last_error contains %q", string(*e))
}

func (e *expectLastError) check(_ context.Context, _ *runner, _ *lab.Node, an ironic.Node) string {
	want, got := string(*e), an.Error()
	if want == "" && got != "" || want != "" && !strings.Contains(got, want) {
		return fmt.Sprintf("last_error %q", got)
	}
	return ""
}
