package scenarios

import (
	"context"
	"fmt"
	"regexp"

	"github.com/ironlab/ironlab/fakeagent"
	"github.com/ironlab/ironlab/scenarios/ironic"
	"github.com/ironlab/ironlab/simulator/lab"
)

// `rescue_password: pw`: the node's rescue ramdisk ran
// rescue.finalize_rescue, and the hash it got for the rescue user logs in
// with pw (the driver sent the crypt(3) hash of the rescue request's password).
type expectRescuePassword string

func init() {
	registerExpectation("rescue_password", func() expectation { return new(expectRescuePassword) })
}

func (e *expectRescuePassword) unset() bool { return *e == "" }

func (e *expectRescuePassword) validate(*validator, string, *Lab) {}

func (e *expectRescuePassword) name() string { return "rescue user's password is the rescue request's" }

// rescueHashLine is what the lab prints on a rescued machine's console.
var rescueHashLine = regexp.MustCompile(`rescue user's password hash is (\S+)`)

func (e *expectRescuePassword) check(_ context.Context, _ *runner, n *lab.Node, _ ironic.Node) string {
	hash := n.RescuePasswordHash()
	if hash == "" {
		if log, err := n.Machine.ConsoleLog(); err == nil {
			if m := rescueHashLine.FindAllStringSubmatch(log, -1); len(m) > 0 {
				hash = m[len(m)-1][1]
			}
		}
	}
	switch {
	case hash == "":
		return "the agent never ran rescue.finalize_rescue (no rescue password hash)"
	case hash == string(*e):
		return "the agent got the password itself, not its hash"
	case !fakeagent.RescueLogin(hash, string(*e)):
		return fmt.Sprintf("the rescue user's hash %s does not match the password", hash)
	}
	return ""
}
