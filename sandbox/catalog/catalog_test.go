package catalog

import (
	"encoding/csv"
	"errors"
	"io/fs"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// csvPaths are where the shared data may sit: shared/ inside the checkout,
// or beside it (DESIGN.md's ../shared/data from the repository root).
var csvPaths = []string{
	"../../shared/data/ec2-instance-types.csv",
	"../../../shared/data/ec2-instance-types.csv",
}

// readCSV returns the shared instance-type table keyed by name. It fails when
// the file is missing in CI and skips elsewhere, since the data lives outside
// the repository.
func readCSV(t *testing.T) map[string]map[string]string {
	t.Helper()
	var (
		f       *os.File
		err     error
		csvPath string
	)
	for _, csvPath = range csvPaths {
		if f, err = os.Open(csvPath); !errors.Is(err, fs.ErrNotExist) {
			break
		}
	}
	if errors.Is(err, fs.ErrNotExist) && os.Getenv("CI") != "true" {
		t.Skipf("instance-type data missing at %v; skipping outside CI", csvPaths)
	}
	if err != nil {
		t.Fatalf("opening instance-type data: %v", err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil || len(rows) < 2 {
		t.Fatalf("reading %s: %v (%d rows)", csvPath, err, len(rows))
	}
	out := map[string]map[string]string{}
	for _, row := range rows[1:] {
		rec := map[string]string{}
		for i, col := range rows[0] {
			rec[col] = row[i]
		}
		out[rec["name"]] = rec
	}
	return out
}

func TestCatalogMatchesData(t *testing.T) {
	t.Parallel()
	data := readCSV(t)
	for _, it := range Default() {
		t.Run(it.Name, func(t *testing.T) {
			t.Parallel()
			rec, ok := data[it.Name]
			if !ok {
				t.Fatalf("%s is not in the instance-type data", it.Name)
			}
			num := func(col string) int64 {
				v, err := strconv.ParseInt(rec[col], 10, 64)
				if err != nil {
					t.Fatalf("column %s = %q: %v", col, rec[col], err)
				}
				return v
			}
			checks := []struct {
				field     string
				got, want any
			}{
				{"arch", it.Arch, rec["arch"]},
				{"vcpu", int64(it.VCPU), num("vcpu")},
				{"memory_mib", it.Memory, num("memory_mib")},
				{"gpu_count", int64(it.GPU.Count), num("gpu_count")},
				{"gpu_name", strings.ToLower(it.GPU.Name), rec["gpu_name"]},
				{"gpu_manufacturer", strings.ToLower(it.GPU.Manufacturer), rec["gpu_manufacturer"]},
				{"accelerator_count", int64(it.Neuron.Count), num("accelerator_count")},
				{"efa", int64(it.EFAMaxInterfaces), num("efa")},
				{"local_nvme_gib", it.LocalNVMe.TotalGiB, num("local_nvme_gib")},
				{"network_bandwidth_mbps", it.NetworkBandwidthMbps, num("network_bandwidth_mbps")},
				{"enis", int64(it.MaxENIs), num("enis")},
				{"ipv4_per_eni", int64(it.IPv4PerENI), num("ipv4_per_eni")},
				{"hypervisor", it.Hypervisor, rec["hypervisor"]},
				{"bare_metal", strconv.FormatBool(it.BareMetal), rec["bare_metal"]},
			}
			if it.GPU.Count > 0 {
				checks = append(checks, struct {
					field     string
					got, want any
				}{"gpu_memory_mib", it.GPU.MemoryMiB, num("gpu_memory_mib")})
			}
			if it.Neuron.Count > 0 {
				checks = append(checks, struct {
					field     string
					got, want any
				}{"accelerator_name", strings.ToLower(it.Neuron.Name), rec["accelerator_name"]})
			}
			for _, c := range checks {
				if c.got != c.want {
					t.Errorf("%s = %v, data says %v", c.field, c.got, c.want)
				}
			}
			price, err := strconv.ParseFloat(rec["price_usd_hour_us_east_1"], 64)
			if err != nil || math.Abs(price-it.PriceUSDHour) > 1e-9 {
				t.Errorf("price = %v, data says %q", it.PriceUSDHour, rec["price_usd_hour_us_east_1"])
			}
		})
	}
}

// TestCatalogShape checks what the table cannot: internal consistency.
func TestCatalogShape(t *testing.T) {
	t.Parallel()
	cat := Default()
	if !slices.IsSortedFunc(cat, func(a, b InstanceType) int { return strings.Compare(a.Name, b.Name) }) {
		t.Error("catalog is not sorted by name")
	}
	for i, it := range cat {
		if i > 0 && cat[i-1].Name == it.Name {
			t.Errorf("%s listed twice", it.Name)
		}
		if it.IPv6PerENI != it.IPv4PerENI || it.NetworkCards < 1 || it.NetworkPerformance == "" {
			t.Errorf("%s: ipv6 %d ipv4 %d cards %d perf %q", it.Name, it.IPv6PerENI, it.IPv4PerENI, it.NetworkCards, it.NetworkPerformance)
		}
		if s := it.LocalNVMe; int64(s.Disks)*s.DiskSizeGiB != s.TotalGiB {
			t.Errorf("%s: %d disks of %d GiB != %d GiB", it.Name, s.Disks, s.DiskSizeGiB, s.TotalGiB)
		}
		if it.BareMetal != (it.Hypervisor == "") {
			t.Errorf("%s: bare metal %v with hypervisor %q", it.Name, it.BareMetal, it.Hypervisor)
		}
	}
}

func TestLookup(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		ok       bool
		ec2Arch  string
		family   string
		gpuCount int32
	}{
		{"g5.xlarge", true, "x86_64", "g5", 1},
		{"c6g.large", true, "arm64", "c6g", 0},
		{"p4d.24xlarge", true, "x86_64", "p4d", 8},
		{"m5.huge", false, "", "", 0},
		{"", false, "", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			it, ok := Lookup(tt.name)
			if ok != tt.ok {
				t.Fatalf("Lookup(%q) ok = %v", tt.name, ok)
			}
			if ok && (it.EC2Architecture() != tt.ec2Arch || it.Family() != tt.family || it.GPU.Count != tt.gpuCount) {
				t.Errorf("Lookup(%q) = %+v", tt.name, it)
			}
		})
	}
}

func TestDefaultReturnsFreshSlice(t *testing.T) {
	t.Parallel()
	a := Default()
	a[0].Name = "changed"
	if Default()[0].Name == "changed" {
		t.Error("Default shares state between calls")
	}
}
