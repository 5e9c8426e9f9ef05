package api_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/ironlab/ironlab/driver/api"
	"github.com/ironlab/ironlab/driver/store"
)

// BenchmarkColumnsJSON is the answer to a wait's poll (GET
// /v1/nodes?fields=, the scenarios' state fields) for 1000 nodes: written
// by hand (columns) and, for comparison, as the handler wrote it before
// (a map per node through encoding/json).
func BenchmarkColumnsJSON(b *testing.B) {
	fields := []string{"uuid", "name", "provision_state", "target_provision_state", "power_state", "maintenance", "maintenance_reason", "last_error", "reservation"}
	nodes := make([]*store.Node, 1000)
	for i := range nodes {
		nodes[i] = &store.Node{UUID: fmt.Sprintf("5d4c7a0e-0000-4000-8000-%012d", i), Name: fmt.Sprintf("n-%d", i),
			ProvisionState: "wait call-back", TargetProvisionState: "active", PowerState: "power on"}
	}
	b.Run("columns", func(b *testing.B) {
		for b.Loop() {
			_ = api.ColumnsJSON(nodes, fields)
		}
	})
	b.Run("maps", func(b *testing.B) {
		for b.Loop() {
			out := make([]any, 0, len(nodes))
			for _, n := range nodes {
				d := make(map[string]any, len(fields))
				for _, f := range fields {
					d[f] = api.ColumnFields[f](n)
				}
				out = append(out, d)
			}
			_, _ = json.Marshal(map[string]any{"nodes": out})
		}
	})
}
