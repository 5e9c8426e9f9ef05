package scenarios

import (
	"context"
	"fmt"
	"strconv"

	"strings"

	"github.com/ironlab/ironlab/scenarios/ironic"
	"github.com/ironlab/ironlab/simulator/lab"
)

// `console: text`: the machine's serial console holds the text (a virtual
// CD boot's verdict, a firmware message).
type expectConsole string

func init() {
	registerExpectation("console", func() expectation { return new(expectConsole) })
}

func (e *expectConsole) unset() bool { return *e == "" }

func (e *expectConsole) validate(*validator, string, *Lab) {}

func (e *expectConsole) name() string { return fmt.Sprintf("console contains %q", string(*e)) }

func (e *expectConsole) check(_ context.Context, _ *runner, n *lab.Node, _ ironic.Node) string {
	log, err := n.Machine.ConsoleLog()
	if err != nil {
		return fmt.Sprintf("read the console: %v", err)
	}
	if !strings.Contains(log, string(*e)) {
		return "the console ends with " + strconv.Quote(consoleTail(log, 3))
	}
	return ""
}
