package instancestore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// InstanceStoreModel is the NVMe model string of EC2 instance-store disks;
// EBS volumes read "Amazon Elastic Block Store".
const InstanceStoreModel = "Amazon EC2 NVMe Instance Storage"

// nvmeNamespace matches the whole-disk block devices of NVMe namespaces
// (nvme1n1), not their partitions, which sysfs lists elsewhere anyway.
var nvmeNamespace = regexp.MustCompile(`^nvme(\d+)n(\d+)$`)

// Discover returns the instance-store disks: the NVMe namespaces under
// sysfsRoot/block whose controller's model is InstanceStoreModel, as paths
// under devRoot, ordered by controller number.
func Discover(sysfsRoot, devRoot string) ([]string, error) {
	blockDir := filepath.Join(sysfsRoot, "block")
	entries, err := os.ReadDir(blockDir)
	if err != nil {
		return nil, fmt.Errorf("listing block devices in %s: %w", blockDir, err)
	}
	type disk struct {
		name        string
		ctrl, nsNum int
	}
	var disks []disk
	for _, e := range entries {
		m := nvmeNamespace.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		modelPath := filepath.Join(blockDir, e.Name(), "device", "model")
		model, err := os.ReadFile(modelPath)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading the model of %s: %w", e.Name(), err)
		}
		if strings.TrimSpace(string(model)) != InstanceStoreModel {
			continue
		}
		ctrl, _ := strconv.Atoi(m[1])
		nsNum, _ := strconv.Atoi(m[2])
		disks = append(disks, disk{e.Name(), ctrl, nsNum})
	}
	// Numeric order, so nvme10n1 follows nvme9n1: array membership does not
	// depend on it, but logs and the state file read better.
	slices.SortFunc(disks, func(a, b disk) int {
		if a.ctrl != b.ctrl {
			return a.ctrl - b.ctrl
		}
		return a.nsNum - b.nsNum
	})
	out := make([]string, 0, len(disks))
	for _, d := range disks {
		out = append(out, filepath.Join(devRoot, d.name))
	}
	return out, nil
}
