package lab

import (
	"fmt"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"
)

// nodesFile is the document `baremetal create FILE` (python-ironicclient)
// accepts: {"nodes": [{name, driver, driver_info, properties, ports: [...]}]}.
type nodesFile struct {
	Nodes []nodeEntry `yaml:"nodes"`
}

type nodeEntry struct {
	Name       string         `yaml:"name"`
	UUID       string         `yaml:"uuid"`
	Driver     string         `yaml:"driver"`
	DriverInfo map[string]any `yaml:"driver_info"`
	Properties map[string]any `yaml:"properties"`
	Ports      []portEntry    `yaml:"ports"`
}

type portEntry struct {
	Address string `yaml:"address"`
}

// WriteNodesYAML writes the lab's nodes in the format `baremetal create`
// accepts. driver overrides each node's driver class when set (a modern
// Ironic knows hardware types such as "ipmi", not agent_ipmitool).
func (l *Lab) WriteNodesYAML(path, driver string) error {
	var f nodesFile
	for _, n := range l.nodes {
		e := nodeEntry{Name: n.Name, UUID: n.UUID, Driver: n.Driver, DriverInfo: n.DriverInfo(), Properties: n.Properties()}
		if driver != "" {
			e.Driver = driver
		}
		for _, m := range n.MACs {
			e.Ports = append(e.Ports, portEntry{Address: m})
		}
		f.Nodes = append(f.Nodes, e)
	}
	b, err := yaml.Marshal(f)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(path, b, 0o600); err != nil { // it holds BMC passwords
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
