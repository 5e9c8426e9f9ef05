package scenarios

import (
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/ironlab/ironlab/images"
	"github.com/ironlab/ironlab/simulator/lab"
)

// LabSpec is the lab a scenario describes (state folders, logging and
// agent timing are the caller's to add).
func LabSpec(s *Scenario) lab.Spec {
	spec := lab.Spec{
		Name: s.Name, Seed: s.Seed, Backend: s.Lab.Backend,
		BMCAddressing: s.Lab.BMCAddressing, BMCBasePort: s.Lab.BMCBasePort,
		Libvirt: vmSpec(s),
	}
	for _, im := range s.Lab.Images {
		spec.Images = append(spec.Images, images.Spec{ID: im.ID, Size: im.size, Format: im.Format})
	}
	for _, g := range s.Lab.Groups {
		spec.Groups = append(spec.Groups, lab.GroupSpec{
			Name: g.Name, Count: g.Count,
			Hardware: lab.Hardware{BMC: lab.BMC(g.BMC), RedfishListen: lab.RedfishListen(g.RedfishListen), Firmware: g.BootMode, CPUs: g.CPUs, MemoryMB: g.MemoryMB,
				DiskSize: g.diskSize, SecureErase: g.SecureErase, NICs: g.NICs, POSTTime: g.postTime},
			BMCUser: g.BMCUser, BMCPassword: g.BMCPassword,
			Enrollment: lab.Enrollment{Deploy: lab.Deploy(g.Deploy), Driver: g.Driver, Dialect: g.Dialect, Boot: g.Boot},
		})
	}
	return spec
}

// labSpec is this run's lab: the scenario's, in stateDir, with the groups
// this machine cannot run left out (or an error, with
// opts.FailOnMissingTools). total counts the nodes kept.
func (r *runner) labSpec(stateDir string) (spec lab.Spec, total int, err error) {
	spec = LabSpec(r.s)
	spec.StateDir, spec.ImageDir, spec.Logger = stateDir, r.opts.ImageCache, r.log
	spec.LookupInterval, spec.HeartbeatErrorBackoff = r.opts.LookupInterval, r.opts.HeartbeatErrorBackoff
	spec.ForcedHeartbeatGap = 200 * time.Millisecond
	spec.Libvirt.Progress = r.out
	spec.Libvirt.AgentBinary, spec.Libvirt.CacheDir = r.opts.AgentBinary, r.opts.RamdiskCache
	groups := spec.Groups
	spec.Groups = nil
	for _, g := range groups {
		if why := vmUnsupported(g.Hardware.BMC, g.Enrollment.Deploy); why != "" && spec.Backend == "libvirt" {
			return spec, 0, fmt.Errorf("group %s: %s", g.Name, why)
		}
		if why := missingTool(g.Enrollment.Driver); why != "" {
			if r.opts.FailOnMissingTools {
				return spec, 0, fmt.Errorf("group %s (%s): %s", g.Name, g.Enrollment.Driver, why)
			}
			r.printf("!! skipping group %s (%d %s nodes): %s\n", g.Name, g.Count, g.Enrollment.Driver, why)
			r.result.Skipped = append(r.result.Skipped, fmt.Sprintf("%s: %s", g.Name, why))
			r.skipped[g.Name] = true
			continue
		}
		spec.Groups = append(spec.Groups, g)
		total += g.Count
	}
	return spec, total, nil
}

// missingTool says why a driver class cannot run on this machine, if it cannot.
func missingTool(driver string) string {
	if strings.HasSuffix(driver, "_ipmitool") {
		if _, err := exec.LookPath("ipmitool"); err != nil {
			return "ipmitool is not installed (apt-get install ipmitool, or run make test as root)"
		}
	}
	return ""
}
