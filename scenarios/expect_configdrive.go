package scenarios

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"

	"github.com/ironlab/ironlab/images/configdrive"
	"github.com/ironlab/ironlab/scenarios/ironic"
	"github.com/ironlab/ironlab/simulator/lab"
)

// `configdrive: {meta_data: {hostname: node-1}}`: the node's disk has a
// partition labelled config-2 (as the agent writes it) whose
// openstack/latest/meta_data.json holds these keys with these values.
type expectConfigdrive struct {
	MetaData map[string]any `yaml:"meta_data" json:"meta_data"`
}

func init() {
	registerExpectation("configdrive", func() expectation { return new(expectConfigdrive) })
}

func (e *expectConfigdrive) validate(v *validator, p string, _ *Lab) {
	if len(e.MetaData) == 0 {
		v.at(p+".meta_data", "must name at least one key of meta_data.json")
	}
}

func (e *expectConfigdrive) name() string {
	keys := make([]string, 0, len(e.MetaData))
	for k := range e.MetaData {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return "config drive meta_data " + strings.Join(keys, ", ")
}

func (e *expectConfigdrive) check(_ context.Context, _ *runner, n *lab.Node, _ ironic.Node) string {
	md, err := readConfigdrive(n.DiskPath())
	if err != nil {
		return err.Error()
	}
	var bad []string
	for k, want := range e.MetaData {
		if !sameJSON(want, md[k]) {
			bad = append(bad, fmt.Sprintf("%s is %v, want %v", k, md[k], want))
		}
	}
	sort.Strings(bad)
	return strings.Join(bad, "; ")
}

// readConfigdrive reads meta_data.json of the config drive on a disk file.
func readConfigdrive(path string) (map[string]any, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open disk: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	d, err := configdrive.Find(f, st.Size())
	if err != nil {
		return nil, err
	}
	return d.MetaData()
}

// sameJSON compares a YAML value with a JSON one (numbers as float64).
func sameJSON(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	if err1 != nil || err2 != nil {
		return false
	}
	var va, vb any
	_ = json.Unmarshal(ja, &va)
	_ = json.Unmarshal(jb, &vb)
	return reflect.DeepEqual(va, vb)
}
