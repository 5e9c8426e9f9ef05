package scenarios

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/ironlab/ironlab/scenarios/ironic"
	"github.com/ironlab/ironlab/simulator/lab"
)

// `bios_settings: {name: value}`: the machine's firmware settings, as the
// next inventory reports them.
type expectBIOSSettings map[string]string

func init() {
	registerExpectation("bios_settings", func() expectation { return new(expectBIOSSettings) })
}

func (e *expectBIOSSettings) unset() bool { return len(*e) == 0 }

func (e *expectBIOSSettings) validate(*validator, string, *Lab) {}

func (e *expectBIOSSettings) name() string {
	return fmt.Sprintf("bios_settings %v", map[string]string(*e))
}

func (e *expectBIOSSettings) check(_ context.Context, _ *runner, n *lab.Node, _ ironic.Node) string {
	got := n.Machine.Hardware().BIOSSettings
	var bad []string
	for k, v := range *e {
		if got[k] != v {
			bad = append(bad, fmt.Sprintf("%s=%q", k, got[k]))
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return "the inventory says " + strings.Join(bad, ", ")
	}
	return ""
}
