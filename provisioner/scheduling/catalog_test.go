package scheduling

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/autonode/autonode/agent/nodeconfig"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// csvPaths are where the shared data may sit: shared/ inside the checkout,
// or beside it (DESIGN.md's ../shared/data from the repository root).
var csvPaths = []string{
	"../../shared/data/ec2-instance-types.csv",
	"../../../shared/data/ec2-instance-types.csv",
}

// catalogZones are where every catalog type is offered, on demand.
var catalogZones = []string{"us-east-1a", "us-east-1b", "us-east-1c"}

// neuronCores per Neuron device, by accelerator name.
var neuronCores = map[string]int64{"inferentia": 4, "inferentia2": 2, "trainium": 2, "trainium2": 8}

// catalogTypes reads the priced types of the shared table. Allocatable is
// agent/nodeconfig's (7.5% VM memory overhead, EKS kube-reserved, the
// 100Mi eviction threshold, a 20 GiB kubelet filesystem).
func catalogTypes(tb testing.TB) []*InstanceType {
	tb.Helper()
	var f *os.File
	var err error
	for _, p := range csvPaths {
		if f, err = os.Open(p); !errors.Is(err, fs.ErrNotExist) {
			break
		}
	}
	if errors.Is(err, fs.ErrNotExist) && os.Getenv("CI") != "true" {
		tb.Skipf("instance-type data missing at %v; skipping outside CI", csvPaths)
	}
	if err != nil {
		tb.Fatalf("opening instance-type data: %v", err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil || len(rows) < 2 {
		tb.Fatalf("reading instance-type data: %v", err)
	}
	col := map[string]int{}
	for i, c := range rows[0] {
		col[c] = i
	}
	num := func(row []string, c string) int64 {
		v, _ := strconv.ParseInt(row[col[c]], 10, 64)
		return v
	}
	var out []*InstanceType
	for _, row := range rows[1:] {
		price, err := strconv.ParseFloat(row[col["price_usd_hour_us_east_1"]], 64)
		if err != nil {
			continue
		}
		maxPods := num(row, "max_pods_eni")
		if maxPods == 0 {
			maxPods = 110
		}
		ext := corev1.ResourceList{}
		gpus := num(row, "gpu_count")
		if row[col["gpu_manufacturer"]] == "nvidia" && gpus > 0 {
			ext[ResourceNvidiaGPU] = *resource.NewQuantity(gpus, resource.DecimalSI)
		}
		if cores, ok := neuronCores[row[col["accelerator_name"]]]; ok {
			n := num(row, "accelerator_count")
			ext[ResourceNeuron] = *resource.NewQuantity(n, resource.DecimalSI)
			ext[ResourceNeuronCore] = *resource.NewQuantity(n*cores, resource.DecimalSI)
		}
		if efa := num(row, "efa"); efa > 0 {
			ext[ResourceEFA] = *resource.NewQuantity(efa, resource.DecimalSI)
		}
		nc := nodeconfig.NodeCapacity{VCPUs: int(num(row, "vcpu")), MemoryMiB: num(row, "memory_mib"),
			EphemeralStorage: resource.MustParse("20Gi"), MaxPods: int(maxPods), Extended: ext}
		capList, err := nodeconfig.Capacity(nc, nodeconfig.AllocatableOptions{})
		if err != nil {
			continue
		}
		allocList, err := nodeconfig.Allocatable(nc, nodeconfig.AllocatableOptions{})
		if err != nil {
			continue
		}
		capa, err1 := ResourcesFromList(capList)
		alloc, err2 := ResourcesFromList(allocList)
		if err1 != nil || err2 != nil {
			tb.Fatalf("%s: %v %v", row[0], err1, err2)
		}
		it := &InstanceType{Name: row[0], Arch: row[col["arch"]], Capacity: capa, Allocatable: alloc, Labels: map[string]string{
			"autonode.dev/instance-family":     row[col["family"]],
			"autonode.dev/instance-category":   row[col["category"]],
			"autonode.dev/instance-generation": row[col["generation"]],
			"autonode.dev/instance-cpu":        row[col["vcpu"]],
		}}
		if g := row[col["gpu_name"]]; g != "" {
			it.Labels["autonode.dev/instance-gpu-name"] = g
		}
		for _, z := range catalogZones {
			it.Offerings = append(it.Offerings, Offering{Zone: z, CapacityType: CapacityTypeOnDemand, Price: price, Available: true})
		}
		out = append(out, it)
	}
	return out
}

// catalogPods is a mix modelled on a busy general-purpose cluster:
// Deployments of 10 replicas each, a third of them spread over zones
// (DoNotSchedule), some memory-heavy, a few one-per-node databases, and 5%
// GPU pods (1 or 4 GPUs).
func catalogPods(count int, seed uint64) []*corev1.Pod {
	r := rand.New(rand.NewPCG(seed, 7))
	pick := func(s ...string) string { return s[r.IntN(len(s))] }
	var pods []*corev1.Pod
	for app := 0; len(pods) < count; app++ {
		o := podOpts{labels: map[string]string{"app": fmt.Sprintf("app%d", app)}}
		switch k := r.IntN(100); {
		case k < 50: // web
			o.cpu, o.mem = pick("250m", "500m", "1"), pick("512Mi", "1Gi", "2Gi")
		case k < 70: // workers
			o.cpu, o.mem = pick("1", "2", "4"), pick("2Gi", "4Gi", "8Gi")
		case k < 85: // caches
			o.cpu, o.mem = pick("500m", "1"), pick("8Gi", "16Gi")
		case k < 94: // small helpers
			o.cpu, o.mem = "100m", "128Mi"
		case k < 95: // databases, one per node
			o.cpu, o.mem = "2", "8Gi"
			o.anti = []corev1.PodAffinityTerm{{TopologyKey: LabelHostname, LabelSelector: sel("app", o.labels["app"])}}
		default: // GPU inference and training
			if r.IntN(5) == 0 {
				o.cpu, o.mem = "32", "128Gi"
				o.extra = corev1.ResourceList{ResourceNvidiaGPU: resource.MustParse("4")}
			} else {
				o.cpu, o.mem = "4", "16Gi"
				o.extra = corev1.ResourceList{ResourceNvidiaGPU: resource.MustParse("1")}
			}
		}
		if r.IntN(3) == 0 && o.anti == nil {
			o.spread = []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: LabelZone,
				WhenUnsatisfiable: corev1.DoNotSchedule, LabelSelector: sel("app", o.labels["app"])}}
		}
		for i := 0; i < 10 && len(pods) < count; i++ {
			o.name = fmt.Sprintf("app%d-%d", app, i)
			pods = append(pods, mkPod(o))
		}
	}
	return pods
}

// catalogDaemonSets are two small node agents on every node.
func catalogDaemonSets() []*corev1.Pod {
	return []*corev1.Pod{
		mkPod(podOpts{name: "log-agent", cpu: "100m", mem: "128Mi"}),
		mkPod(podOpts{name: "metrics-agent", cpu: "50m", mem: "100Mi"}),
	}
}

// bounds returns the issue's lower bound (the larger of total CPU × the
// cheapest $/vCPU and total memory × the cheapest $/GiB, plus GPUs × the
// cheapest $/GPU for GPU pods) and the tighter LP bound (the cheapest
// fractional mix of types covering total CPU, memory and GPUs). No packing
// can cost less than either.
func bounds(types []*InstanceType, pods []*corev1.Pod) (issue, lp float64) {
	perCPU, perGiB, perGPU := math.Inf(1), math.Inf(1), math.Inf(1)
	var caps [][]float64
	var prices []float64
	for _, it := range types {
		p := it.Offerings[0].Price
		cpu, mem := float64(it.Capacity[CPU])/1000, float64(nominalMiB(it))/1024
		perCPU, perGiB = min(perCPU, p/cpu), min(perGiB, p/mem)
		if g := it.Capacity[NvidiaGPU]; g > 0 {
			perGPU = min(perGPU, p/float64(g))
		}
		caps = append(caps, []float64{cpu, mem, float64(it.Capacity[NvidiaGPU])})
		prices = append(prices, p)
	}
	var cpu, mem, gpu float64
	var cpuN, memN float64
	for _, p := range pods {
		r, _ := PodRequests(p)
		c, m := float64(r[CPU])/1000, float64(r[Memory])/(1<<30)
		cpu, mem = cpu+c, mem+m
		if r[NvidiaGPU] > 0 {
			gpu += float64(r[NvidiaGPU])
		} else {
			cpuN, memN = cpuN+c, memN+m
		}
	}
	issue = max(cpuN*perCPU, memN*perGiB) + gpu*perGPU
	return issue, lpMinCost(caps, prices, []float64{cpu, mem, gpu})
}

// nominalMiB undoes the VM overhead in Capacity, so bounds use the
// table's memory as the issue defines them.
func nominalMiB(it *InstanceType) int64 {
	return int64(math.Round(float64(it.Capacity[Memory]>>20) / (1 - nodeconfig.DefaultVMMemoryOverheadPercent/100)))
}

// lpMinCost solves min Σ price·x subject to Σ caps·x ≥ need, x ≥ 0, through
// its dual (max need·y subject to caps·y ≤ price, y ≥ 0) with a dense
// simplex tableau and Bland's rule.
func lpMinCost(caps [][]float64, prices []float64, need []float64) float64 {
	m, n := len(caps), len(need)
	cols := n + m + 1
	tab := make([]float64, (m+1)*cols)
	at := func(i, j int) *float64 { return &tab[i*cols+j] }
	for i := range m {
		for j := range n {
			*at(i, j) = caps[i][j]
		}
		*at(i, n+i) = 1
		*at(i, cols-1) = prices[i]
	}
	for j := range n {
		*at(m, j) = -need[j]
	}
	const eps = 1e-12
	for {
		e := -1
		for j := range cols - 1 {
			if *at(m, j) < -eps {
				e = j
				break
			}
		}
		if e < 0 {
			return *at(m, cols-1)
		}
		r, best := -1, math.Inf(1)
		for i := range m {
			if a := *at(i, e); a > eps {
				if q := *at(i, cols-1) / a; q < best {
					r, best = i, q
				}
			}
		}
		if r < 0 {
			return math.Inf(1)
		}
		piv := *at(r, e)
		for j := range cols {
			*at(r, j) /= piv
		}
		for i := range m + 1 {
			if f := *at(i, e); i != r && f != 0 {
				for j := range cols {
					*at(i, j) -= f * *at(r, j)
				}
			}
		}
	}
}

// BenchmarkCatalog runs the real catalog with the realistic mix, reporting
// pods/s and the cost over both lower bounds.
func BenchmarkCatalog(b *testing.B) {
	types := catalogTypes(b)
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("pods=%d", n), func(b *testing.B) {
			in := Input{Pods: catalogPods(n, 1), DaemonSets: catalogDaemonSets(),
				NodePools: []NodePool{{Name: "general", InstanceTypes: types}}}
			issue, lp := bounds(types, in.Pods)
			var res Result
			var total time.Duration
			for b.Loop() {
				start := time.Now()
				var err error
				res, err = Solve(context.Background(), in)
				total += time.Since(start)
				if err != nil {
					b.Fatal(err)
				}
				if len(res.Unschedulable) > 0 {
					b.Fatalf("%d pods unschedulable, first: %v", len(res.Unschedulable), res.Unschedulable[0].Err)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/total.Seconds(), "pods/s")
			b.ReportMetric(float64(len(res.NewNodes)), "nodes")
			b.ReportMetric(res.Cost(), "$/h")
			b.ReportMetric(res.Cost()/issue, "x-issue-bound")
			b.ReportMetric(res.Cost()/lp, "x-lp-bound")
		})
	}
}

func TestCatalogMixIsValid(t *testing.T) {
	types := catalogTypes(t)
	in := Input{Pods: catalogPods(1000, 2), DaemonSets: catalogDaemonSets(), NodePools: []NodePool{{Name: "general", InstanceTypes: types}}}
	res, err := Solve(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Unschedulable) > 0 {
		t.Fatalf("%d pods unschedulable, first: %v", len(res.Unschedulable), res.Unschedulable[0].Err)
	}
	verify(t, in, res)
	issue, lp := bounds(types, in.Pods)
	t.Logf("%d types; %d nodes, $%.2f/h; %.3f× the issue's bound ($%.2f), %.3f× the LP bound ($%.2f)",
		len(types), len(res.NewNodes), res.Cost(), res.Cost()/issue, issue, res.Cost()/lp, lp)
	hist := map[string]int{}
	for _, n := range res.NewNodes {
		hist[n.InstanceTypes[0].Name]++
	}
	t.Logf("types: %v", hist)
}

func TestLPMinCost(t *testing.T) {
	// Two types: A (1 cpu, 4 mem, $1) and B (2 cpu, 1 mem, $1). Covering 4
	// cpu and 4 mem: x_A = 4/7, x_B = 12/7 gives... solve: x_A + 2x_B = 4,
	// 4x_A + x_B = 4 → x_A = 4/7, x_B = 12/7, cost 16/7.
	got := lpMinCost([][]float64{{1, 4}, {2, 1}}, []float64{1, 1}, []float64{4, 4})
	if math.Abs(got-16.0/7) > 1e-9 {
		t.Fatalf("lpMinCost = %v, want %v", got, 16.0/7)
	}
}
