package scenarios

import (
	"context"
	"fmt"

	"github.com/ironlab/ironlab/images"
	"github.com/ironlab/ironlab/simulator/lab"
)

// deploy sets each selected node's instance_info to a lab image and asks
// for active.
func (r *runner) deploy(ctx context.Context, label string, d *Deploy) error {
	info, ok := r.lab.Images.Info(d.Image)
	if !ok {
		return fmt.Errorf("image %s is not served", d.Image)
	}
	nodes := r.selected(d.Nodes)
	r.printf("%s deploy image %s (%d MiB) to %d nodes\n", label, d.Image, info.Size>>20, len(nodes))
	var ops []map[string]any
	switch d.Checksum {
	case "md5":
		ops = append(ops, map[string]any{"op": "add", "path": "/instance_info/image_checksum", "value": info.MD5})
	case "sha256":
		ops = append(ops,
			map[string]any{"op": "add", "path": "/instance_info/image_os_hash_algo", "value": "sha256"},
			map[string]any{"op": "add", "path": "/instance_info/image_os_hash_value", "value": info.SHA256})
	default:
		// Glance's default os_hash_algo. The agent hashes what it writes:
		// in a VM under TCG, Go's sha512 runs at ~49 MB/s, sha256 at ~30.
		ops = append(ops,
			map[string]any{"op": "add", "path": "/instance_info/image_os_hash_algo", "value": "sha512"},
			map[string]any{"op": "add", "path": "/instance_info/image_os_hash_value", "value": info.SHA512})
	}
	if info.Format == images.FormatQcow2 {
		// Ironic's instance_info names a non-raw http image's format; the
		// driver passes it to the agent as image_info's disk_format.
		ops = append(ops, map[string]any{"op": "add", "path": "/instance_info/image_disk_format", "value": images.FormatQcow2})
	}
	return forEach(nodes, func(n *lab.Node) error {
		// The image URL as whoever downloads it sees it (the conductor for PXE).
		src := map[string]any{"op": "add", "path": "/instance_info/image_source", "value": r.lab.ImageURLFor(n, d.Image)}
		if err := r.api.Patch(ctx, r.ident(n), append([]map[string]any{src}, ops...)); err != nil {
			return err
		}
		body := map[string]any{"target": "active"}
		if d.Configdrive != nil {
			body["configdrive"] = d.Configdrive
		}
		return r.sendVerbBody(ctx, n, body)
	})
}
