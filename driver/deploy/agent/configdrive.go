package agent

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/ironlab/ironlab/driver/deploy"
	"github.com/ironlab/ironlab/driver/store"
)

// configDrive is Ironic's get_configdrive_image: instance_info.configdrive
// as the agent gets it. A string (a URL, or the gzipped and base64-encoded
// image) goes as it is; a dictionary with meta_data, user_data,
// network_data and vendor_data is built into a config-2 ISO, with uuid and
// name defaulting to the node's, as build_configdrive does. "" = none.
func configDrive(n *store.Node) (string, error) {
	switch cd := n.InstanceInfo["configdrive"].(type) {
	case nil:
		return "", nil
	case string:
		return cd, nil
	case map[string]any:
		md, _ := cd["meta_data"].(map[string]any)
		if md == nil {
			if v, ok := cd["meta_data"]; ok && v != nil {
				return "", fmt.Errorf("instance_info.configdrive.meta_data of node %s is a %T, want an object", n.UUID, v)
			}
			md = map[string]any{}
		}
		if _, ok := md["uuid"]; !ok {
			md["uuid"] = n.UUID
		}
		if _, ok := md["name"]; !ok && n.Name != "" {
			md["name"] = n.Name
		}
		var userData []byte
		switch ud := cd["user_data"].(type) {
		case nil:
		case string:
			userData = []byte(ud)
		case map[string]any, []any:
			userData, _ = json.Marshal(ud)
		default:
			return "", fmt.Errorf("instance_info.configdrive.user_data of node %s is a %T, want a string, object or list", n.UUID, ud)
		}
		obj := func(k string) (map[string]any, error) {
			v, ok := cd[k]
			if !ok || v == nil {
				return nil, nil
			}
			m, ok := v.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("instance_info.configdrive.%s of node %s is a %T, want an object", k, n.UUID, v)
			}
			return m, nil
		}
		nd, err := obj("network_data")
		if err != nil {
			return "", err
		}
		vd, err := obj("vendor_data")
		if err != nil {
			return "", err
		}
		files, err := configDriveFiles(md, userData, nd, vd)
		if err != nil {
			return "", fmt.Errorf("config drive of node %s: %w", n.UUID, err)
		}
		img, err := ConfigDriveISO(files)
		if err != nil {
			return "", fmt.Errorf("config drive of node %s: %w", n.UUID, err)
		}
		return encodeConfigDrive(img)
	default:
		return "", fmt.Errorf("instance_info.configdrive of node %s is a %T, want a string or an object", n.UUID, cd)
	}
}

// wholeDisk is Ironic's is_whole_disk_image: an image without kernel and
// ramdisk, unless image_type says partition.
func wholeDisk(n *store.Node) bool {
	switch str(n.InstanceInfo, "image_type") {
	case "partition":
		return false
	case "whole-disk":
		return true
	}
	return str(n.InstanceInfo, "kernel") == "" || str(n.InstanceInfo, "ramdisk") == ""
}

func intOr(v any) (int64, bool) {
	switch x := v.(type) {
	case float64:
		return int64(x), true
	case string:
		n, err := strconv.ParseInt(x, 10, 64)
		return n, err == nil
	}
	return 0, false
}

// addPartitionFields adds what Ironic's write_image sends for a partition
// image: PARTITION_IMAGE_LABELS from instance_info (root_mb from root_gb as
// parse_instance_info does), deploy_boot_mode and boot_option.
func addPartitionFields(n *store.Node, info map[string]any) error {
	rootMB, ok := intOr(n.InstanceInfo["root_mb"])
	if !ok {
		gb, ok := intOr(n.InstanceInfo["root_gb"])
		if !ok || gb <= 0 {
			return fmt.Errorf("partition image for node %s: instance_info.root_gb (or root_mb) is missing", n.UUID)
		}
		rootMB = gb * 1024
	}
	info["image_type"] = "partition"
	info["root_mb"] = rootMB
	for _, k := range []string{"swap_mb", "ephemeral_mb"} {
		v, _ := intOr(n.InstanceInfo[k])
		info[k] = v
	}
	info["ephemeral_format"] = n.InstanceInfo["ephemeral_format"]
	info["preserve_ephemeral"] = n.InstanceInfo["preserve_ephemeral"] == true
	for _, k := range []string{"kernel", "ramdisk"} {
		info[k] = n.InstanceInfo[k]
	}
	info["deploy_boot_mode"] = "bios"
	if deploy.BootModeUEFI(n) {
		info["deploy_boot_mode"] = "uefi"
	}
	info["boot_option"] = "local"
	return nil
}
