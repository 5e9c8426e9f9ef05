package scenarios

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
)

// ConductorBytesDetail is the detail field of the PXE deploy's "image
// streamed" events that counts the image bytes that went through the
// conductor: the runner's side of that wire (the driver's is
// driver/deploy/pxe; scenarios/contract checks they agree).
const ConductorBytesDetail = "conductor_image_bytes"

// countConductorBytes adds a node's image bytes that went through the
// conductor (the PXE deploy's "image streamed" events) to the result under
// its driver class; every class gets an entry, so agent classes show 0.
func (r *runner) countConductorBytes(driver string, events []eventFields) {
	if r.result.ConductorImageBytes == nil {
		r.result.ConductorImageBytes = map[string]int64{}
	}
	var n int64
	for _, ev := range events {
		if !bytes.Contains(ev.Detail, []byte(ConductorBytesDetail)) {
			continue
		}
		var d map[string]any
		if json.Unmarshal(ev.Detail, &d) == nil {
			if v, ok := d[ConductorBytesDetail].(float64); ok {
				n += int64(v)
			}
		}
	}
	r.result.ConductorImageBytes[driver] += n
}

// printConductorBytes is the summary line of image bytes through the
// conductor, per driver class: about image size x nodes for PXE, 0 for
// the agent (the spec's scalability argument, measured).
func printConductorBytes(w io.Writer, res *Result) {
	if len(res.ConductorImageBytes) == 0 {
		return
	}
	nodes := map[string]int{}
	for _, n := range res.Nodes {
		nodes[n.Driver]++
	}
	var classes []string
	for c := range res.ConductorImageBytes {
		classes = append(classes, c)
	}
	sort.Strings(classes)
	var parts []string
	for _, c := range classes {
		parts = append(parts, fmt.Sprintf("%s %d MiB (%d nodes)", c, res.ConductorImageBytes[c]>>20, nodes[c]))
	}
	fmt.Fprintf(w, "  image bytes through the conductor: %s\n", strings.Join(parts, ", "))
}
