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
	Name                string         `yaml:"name"`
	UUID                string         `yaml:"uuid"`
	Driver              string         `yaml:"driver"`
	BootInterface       string         `yaml:"boot_interface,omitempty"`
	DeployInterface     string         `yaml:"deploy_interface,omitempty"`
	ManagementInterface string         `yaml:"management_interface,omitempty"`
	PowerInterface      string         `yaml:"power_interface,omitempty"`
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
func (l *Lab) WriteNodesYAML(path string, target Target, driver string) error {
	es, err := l.Enrollments(target)
	if err != nil {
		return err
	}
	var f nodesFile
	for _, en := range es {
		e := nodeEntry{Name: en.Name, UUID: en.UUID, Driver: en.Driver, DriverInfo: en.DriverInfo, Properties: en.Properties,
			BootInterface: en.Interfaces["boot_interface"], DeployInterface: en.Interfaces["deploy_interface"],
			ManagementInterface: en.Interfaces["management_interface"], PowerInterface: en.Interfaces["power_interface"]}
		if driver != "" {
			e.Driver = driver
		}
		for _, m := range en.Ports {
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
