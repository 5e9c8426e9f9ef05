package enroll

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"unicode"

	"github.com/goccy/go-yaml"

	"github.com/ironlab/ironlab/simulator/lab"
)

// nodesFile is the document `baremetal create FILE` (python-ironicclient)
// accepts: {"nodes": [{name, driver, driver_info, properties, ports: [...]}]}.
type nodesFile struct {
	Nodes []nodeEntry `yaml:"nodes"`
}

type nodeEntry struct {
	Name                string         `yaml:"name"`
	UUID                string         `yaml:"uuid"`
	Driver              string         `yaml:"driver"`
	BootInterface       string         `yaml:"boot_interface,omitempty"`
	DeployInterface     string         `yaml:"deploy_interface,omitempty"`
	ManagementInterface string         `yaml:"management_interface,omitempty"`
	PowerInterface      string         `yaml:"power_interface,omitempty"`
	RescueInterface     string         `yaml:"rescue_interface,omitempty"`
	DriverInfo          map[string]any `yaml:"driver_info"`
	Properties          map[string]any `yaml:"properties"`
	Ports               []portEntry    `yaml:"ports"`
}

type portEntry struct {
	Address string `yaml:"address"`
}

// WriteNodesYAML writes the lab's nodes, enrolled as target takes them, in
// the format `baremetal create` accepts. driver, when set, overrides each
// node's driver name.
func WriteNodesYAML(l *lab.Lab, path string, target Target, driver string) error {
	es, err := All(l, target)
	if err != nil {
		return err
	}
	var f nodesFile
	for _, en := range es {
		e := nodeEntry{Name: en.Name, UUID: en.UUID, Driver: en.Driver, DriverInfo: en.DriverInfo, Properties: en.Properties,
			BootInterface: en.Interfaces["boot_interface"], DeployInterface: en.Interfaces["deploy_interface"],
			ManagementInterface: en.Interfaces["management_interface"], PowerInterface: en.Interfaces["power_interface"],
			RescueInterface: en.Interfaces["rescue_interface"]}
		if driver != "" {
			e.Driver = driver
		}
		for _, m := range en.Ports {
			e.Ports = append(e.Ports, portEntry{Address: m})
		}
		f.Nodes = append(f.Nodes, e)
	}
	b, err := yaml.MarshalWithOptions(f, yaml.CustomMarshaler[string](quoteAmbiguous))
	if err != nil {
		return fmt.Errorf("encode the lab's nodes for %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(path, b, 0o600); err != nil { // it holds BMC passwords
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// quoteAmbiguous writes a string double-quoted when a YAML reader could
// take its plain form for something else. goccy/go-yaml (the project's one
// YAML library) quotes YAML 1.1's on/yes/no itself, but writes 1e3 and
// .inf plain, which YAML 1.2 readers take as numbers, and all-digit
// colon groups (12:30:45), which PyYAML (baremetal create) takes as
// base-60 integers; control characters must be escaped. A BMC password is
// a string, whatever it spells.
func quoteAmbiguous(s string) ([]byte, error) {
	b, err := yaml.Marshal(s)
	if err != nil {
		return nil, err
	}
	var back any
	if yaml.Unmarshal(b, &back) != nil || back != s || ambiguousRe.MatchString(s) || strings.ContainsFunc(s, unicode.IsControl) {
		return json.Marshal(s) // a JSON string is a double-quoted YAML one
	}
	return bytes.TrimSuffix(b, []byte("\n")), nil
}

// ambiguousRe matches YAML 1.2 core numbers, infinities and NaN, and
// YAML 1.1 base-60 numbers.
var ambiguousRe = regexp.MustCompile(`^([-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)|[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?)$`)
