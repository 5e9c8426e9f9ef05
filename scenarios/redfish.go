package scenarios

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/ironlab/ironlab/simulator/lab"
)

// The virtual_media and firmware_update steps act on a node's Redfish BMC
// directly, as a user with curl or sushy would: Ironic 21.4's virtual media
// boot is not something our driver does, and a firmware update is a BMC
// operation.

// redfishCall sends one request to the node's Redfish service and returns
// the status, the body and the Location header.
func redfishCall(ctx context.Context, n *lab.Node, method, path string, body any) (int, []byte, string, error) {
	c, err := n.RedfishClient()
	if err != nil {
		return 0, nil, "", err
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, "", err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, n.RedfishURL()+path, rd)
	if err != nil {
		return 0, nil, "", err
	}
	req.SetBasicAuth(n.BMCCreds.Username, n.BMCCreds.Password)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, "", fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, b, resp.Header.Get("Location"), err
}

func redfishMust(ctx context.Context, n *lab.Node, want int, method, path string, body any) ([]byte, string, error) {
	st, b, loc, err := redfishCall(ctx, n, method, path, body)
	if err != nil {
		return nil, "", err
	}
	if st != want {
		return b, loc, fmt.Errorf("%s %s: HTTP %d, want %d: %s", method, path, st, want, strings.TrimSpace(string(b)))
	}
	return b, loc, nil
}

// virtualMedia inserts the image, sets a one-time Cd boot, powers the node
// on (restarts it when on) and waits for the firmware's verdict on the
// console: the CD booted, or the boot failed.
func (r *runner) virtualMedia(ctx context.Context, label string, vm *VirtualMedia) error {
	nodes := r.selected(vm.Nodes)
	url := r.lab.Images.FileURL("no-such-image.iso")
	what := "a missing image (404)"
	// What the console shows when the CD booted (or failed to): the fake
	// firmware's virtual CD line; for the agent ISO, the agent running.
	verdict := "virtual CD"
	switch {
	case vm.Image != "":
		url, what = r.lab.Images.URL(vm.Image), "image "+vm.Image
	case vm.AgentISO:
		what, verdict = "the agent ISO", "ironlab init: agent running"
	}
	r.printf("%s virtual media boot of %d nodes from %s\n", label, len(nodes), what)
	return forEach(nodes, func(n *lab.Node) error {
		url := url
		if vm.AgentISO {
			var err error
			if url, err = r.lab.AgentISOURL(ctx, n); err != nil {
				return err
			}
		}
		cd := "/redfish/v1/Managers/" + n.Redfish.ID() + "/VirtualMedia/Cd"
		insert := map[string]any{"Image": url, "Inserted": true, "WriteProtected": true}
		if vm.ExpectFailure {
			st, _, _, err := redfishCall(ctx, n, http.MethodPost, cd+"/Actions/VirtualMedia.InsertMedia", insert)
			if err != nil {
				return err
			}
			if st < 400 {
				return fmt.Errorf("InsertMedia succeeded (HTTP %d), the step expected the BMC to refuse it", st)
			}
			b, _, err := redfishMust(ctx, n, http.StatusOK, http.MethodGet, cd, nil)
			if err != nil {
				return err
			}
			var d struct{ Image *string }
			if err := json.Unmarshal(b, &d); err != nil || d.Image != nil && *d.Image == url {
				return fmt.Errorf("a refused InsertMedia put its image in the drive (%s)", b)
			}
			r.printf("%s   %s: InsertMedia refused with HTTP %d, the drive unchanged\n", label, n.Name, st)
			return nil
		}
		if _, _, err := redfishMust(ctx, n, http.StatusNoContent, http.MethodPost, cd+"/Actions/VirtualMedia.InsertMedia", insert); err != nil {
			return err
		}
		boot := map[string]any{"Boot": map[string]any{"BootSourceOverrideTarget": "Cd", "BootSourceOverrideEnabled": "Once"}}
		if _, _, err := redfishMust(ctx, n, http.StatusNoContent, http.MethodPatch, n.Redfish.Path(), boot); err != nil {
			return err
		}
		before, _ := n.Machine.ConsoleLog()
		reset := map[string]any{"ResetType": "ForceRestart"} // powers on a node that is off
		if _, _, err := redfishMust(ctx, n, http.StatusNoContent, http.MethodPost, n.Redfish.Path()+"/Actions/ComputerSystem.Reset", reset); err != nil {
			return err
		}
		deadline := time.Now().Add(2 * time.Minute)
		for {
			log, _ := n.Machine.ConsoleLog()
			if len(log) >= len(before) {
				if i := strings.Index(log[len(before):], verdict); i >= 0 {
					line := log[len(before)+i:]
					if j := strings.IndexByte(line, '\n'); j >= 0 {
						line = line[:j]
					}
					r.printf("%s   %s: %s\n", label, n.Name, line)
					return nil
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("no %q on the console 2m after the CD boot; it ends with %q", verdict, consoleTail(log, 3))
			}
			select {
			case <-time.After(50 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	})
}

// firmwareUpdate serves a lab firmware image of the version, starts
// SimpleUpdate on each node's BIOS or BMC and follows the task monitor.
func (r *runner) firmwareUpdate(ctx context.Context, label string, fu *FirmwareUpdate) error {
	nodes := r.selected(fu.Nodes)
	r.printf("%s firmware update of %d nodes' %s to %s\n", label, len(nodes), fu.Target, fu.Version)
	url := r.lab.Images.AddFile("firmware-"+fu.Version+".bin", []byte("ironlab-firmware "+fu.Version+"\n"))
	return forEach(nodes, func(n *lab.Node) error {
		target := n.Redfish.Path()
		if fu.Target == "bmc" {
			target = "/redfish/v1/Managers/" + n.Redfish.ID()
		}
		_, mon, err := redfishMust(ctx, n, http.StatusAccepted, http.MethodPost, "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate",
			map[string]any{"ImageURI": url, "TransferProtocol": "HTTP", "Targets": []string{target}})
		if err != nil {
			return err
		}
		if mon == "" {
			return fmt.Errorf("SimpleUpdate: no task monitor in Location")
		}
		deadline := time.Now().Add(2 * time.Minute)
		for {
			st, b, _, err := redfishCall(ctx, n, http.MethodGet, mon, nil)
			if err != nil {
				return err
			}
			if st == http.StatusOK {
				var task struct {
					TaskState string
					Messages  []struct{ Message string }
				}
				if err := json.Unmarshal(b, &task); err != nil {
					return fmt.Errorf("task %s: %w", mon, err)
				}
				msg := ""
				if len(task.Messages) > 0 {
					msg = task.Messages[len(task.Messages)-1].Message
				}
				switch {
				case fu.ExpectFailure && task.TaskState == "Exception", !fu.ExpectFailure && task.TaskState == "Completed":
					return nil
				default:
					return fmt.Errorf("update task ended %s: %s", task.TaskState, msg)
				}
			}
			if st != http.StatusAccepted {
				return fmt.Errorf("task monitor %s: HTTP %d: %s", mon, st, b)
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("update task still running after 2m")
			}
			select {
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	})
}

// consoleTail is the last n lines of a console log.
func consoleTail(log string, n int) string {
	lines := strings.Split(strings.TrimRight(log, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
