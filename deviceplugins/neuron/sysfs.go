package neuron

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// deviceDir is where the Neuron driver puts one directory per device.
const deviceDir = "devices/virtual/neuron_device"

// scan reads every Neuron device under root (the sysfs root) with its
// topology and health. A device is unhealthy while any error counter is above
// zero: the driver zeroes them when it loads and when an operator writes to
// them, so the mark survives agent restarts and clears only by that act.
func scan(root string) ([]device, error) {
	dir := filepath.Join(root, deviceDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing neuron devices in %s: %w", dir, err)
	}
	var devices []device
	for _, e := range entries {
		idx, ok := parseIndex(e.Name())
		if !ok {
			continue
		}
		d, err := readDevice(filepath.Join(dir, e.Name()), idx)
		if err != nil {
			return nil, err
		}
		devices = append(devices, d)
	}
	slices.SortFunc(devices, func(a, b device) int { return a.index - b.index })
	// Global core indices are device index × cores per device, as the Neuron
	// runtime numbers them; that needs one core count on the whole instance.
	for _, d := range devices[min(1, len(devices)):] {
		if d.cores != devices[0].cores {
			return nil, fmt.Errorf("neuron%d has %d cores but neuron%d has %d: mixed core counts are not supported",
				d.index, d.cores, devices[0].index, devices[0].cores)
		}
	}
	return devices, nil
}

// parseIndex accepts "neuronN" and rejects everything else in the folder.
func parseIndex(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, "neuron")
	if !ok || rest == "" {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

func readDevice(dir string, idx int) (device, error) {
	d := device{index: idx, healthy: true}
	cores, err := readInt(filepath.Join(dir, "core_count"))
	if err != nil {
		return d, err
	}
	if cores <= 0 {
		return d, fmt.Errorf("%s: core count %d", filepath.Join(dir, "core_count"), cores)
	}
	d.cores = int(cores)
	d.neighbours, err = readNeighbours(filepath.Join(dir, "connected_devices"))
	if err != nil {
		return d, err
	}
	// The uncorrectable-error counters under neuronN/stats/hardware/ (neuron
	// driver, ecc_attrs_info_tbl). mem_ecc_repairable_uncorrected is left
	// out: a row repair on the next reset takes care of those.
	for _, name := range []string{"mem_ecc_uncorrected", "sram_ecc_uncorrected"} {
		path := filepath.Join(dir, "stats", "hardware", name)
		v, err := readCounter(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			// inf1 and old drivers have no ECC counters: nothing to watch.
		case err != nil:
			d.healthy, d.reason = false, err.Error()
		case v > 0 && d.healthy:
			d.healthy, d.reason = false, fmt.Sprintf("%s is %d", name, v)
		}
	}
	return d, nil
}

// readNeighbours parses connected_devices, which the driver prints as
// "12, 3, 4, 1"; a device without links (inf2.xlarge) prints nothing.
func readNeighbours(path string) ([]int, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	var out []int
	for f := range strings.FieldsFuncSeq(string(b), func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' }) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("parsing %s: bad device index %q", path, f)
		}
		out = append(out, n)
	}
	return out, nil
}

// readCounter reads a counter file; a counter directory (the driver's
// total/present shape for other stats) is read through its total.
func readCounter(path string) (int64, error) {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		path = filepath.Join(path, "total")
	}
	return readInt(path)
}

func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", path, err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parsing %s: %w", path, err)
	}
	return v, nil
}

// Present reports whether the Neuron driver shows any device under the sysfs
// root, which decides whether the agent serves Neuron at all.
func Present(sysfsRoot string) (bool, error) {
	entries, err := os.ReadDir(filepath.Join(sysfsRoot, deviceDir))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("listing neuron devices: %w", err)
	}
	for _, e := range entries {
		if _, ok := parseIndex(e.Name()); ok {
			return true, nil
		}
	}
	return false, nil
}
