package neuron

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/autonode/autonode/deviceplugins/plugintest"
)

// unitOf parses an id into its position in global order and its device,
// independently of the layout code.
func unitOf(t testing.TB, s shape, id string) (pos, dev int) {
	t.Helper()
	if rest, ok := strings.CutPrefix(id, "neuroncore"); ok {
		k, err := strconv.Atoi(rest)
		if err != nil {
			t.Fatalf("bad core id %q", id)
		}
		return k, k / s.cores
	}
	n, err := strconv.Atoi(strings.TrimPrefix(id, "neuron"))
	if err != nil {
		t.Fatalf("bad device id %q", id)
	}
	return n, n
}

// linked says whether devices da..db form a connected piece of s's graph.
func linked(s shape, da, db int) bool {
	seen := map[int]bool{da: true}
	stack := []int{da}
	for len(stack) > 0 {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, n := range s.links(d) {
			if n >= da && n <= db && !seen[n] {
				seen[n] = true
				stack = append(stack, n)
			}
		}
	}
	return len(seen) == db-da+1
}

// parseCores reads NEURON_RT_VISIBLE_CORES back into core indices.
func parseCores(t testing.TB, v string) []int {
	t.Helper()
	var out []int
	for part := range strings.SplitSeq(v, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			t.Fatalf("%s=%q: %v", VisibleCoresEnv, v, err)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b <= a {
				t.Fatalf("%s=%q: bad range %q", VisibleCoresEnv, v, part)
			}
		}
		for c := a; c <= b; c++ {
			out = append(out, c)
		}
	}
	return out
}

// TestRandomAllocateFree plays a kubelet: random sequences of preferred
// allocations, Allocate calls and frees. No core is ever handed out twice,
// and whenever a contiguous connected window could serve a request, the
// preferred allocation is one.
func TestRandomAllocateFree(t *testing.T) {
	tests := []struct {
		shape   shape
		mode    Mode
		maxSize int
	}{
		{trn1(), ModeCore, 12},
		{trn1(), ModeDevice, 6},
		{trn2(), ModeCore, 40},
		{trn2(), ModeDevice, 8},
		{inf2(), ModeCore, 10},
		{inf2(), ModeDevice, 5},
		{inf2xl(), ModeCore, 2},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprintf("%s/%s", tt.shape.name, tt.mode), func(t *testing.T) {
			s := tt.shape
			b := newBackend(t, fakeSysfs(t, s), tt.mode)
			var units []string
			for _, d := range <-plugintest.StartBackend(t, b) {
				units = append(units, d.ID)
			}
			rng := rand.New(rand.NewPCG(42, uint64(i)))
			owner := map[string]int{}    // unit id -> allocation
			coreOwner := map[int]int{}   // global core -> allocation
			held := map[int][]string{}   // allocation -> unit ids
			heldCores := map[int][]int{} // allocation -> cores
			contiguous, scattered := 0, 0
			for step := range 1000 {
				if len(held) > 0 && rng.IntN(3) == 0 {
					keys := slices.Sorted(func(yield func(int) bool) {
						for k := range held {
							if !yield(k) {
								return
							}
						}
					})
					k := keys[rng.IntN(len(keys))]
					for _, id := range held[k] {
						delete(owner, id)
					}
					for _, c := range heldCores[k] {
						delete(coreOwner, c)
					}
					delete(held, k)
					delete(heldCores, k)
					continue
				}
				var avail []string
				for _, id := range units {
					if _, used := owner[id]; !used {
						avail = append(avail, id)
					}
				}
				if len(avail) == 0 {
					continue
				}
				rng.Shuffle(len(avail), func(a, b int) { avail[a], avail[b] = avail[b], avail[a] })
				size := 1 + rng.IntN(min(len(avail), tt.maxSize))
				var must []string
				if rng.IntN(4) == 0 {
					must = avail[:1]
				}

				got, err := b.PreferredAllocation(avail, must, size)
				if err != nil {
					t.Fatalf("step %d: PreferredAllocation(%d): %v", step, size, err)
				}
				if len(got) != size {
					t.Fatalf("step %d: got %d ids, want %d", step, len(got), size)
				}
				for _, id := range must {
					if !slices.Contains(got, id) {
						t.Fatalf("step %d: %v lacks required %s", step, got, id)
					}
				}
				pos := map[int]bool{}
				for _, id := range got {
					if !slices.Contains(avail, id) {
						t.Fatalf("step %d: %s is not available", step, id)
					}
					p, _ := unitOf(t, s, id)
					if pos[p] {
						t.Fatalf("step %d: %s twice in %v", step, id, got)
					}
					pos[p] = true
				}
				if windowExists(t, s, avail, must, size) {
					if !isWindow(t, s, got) {
						t.Fatalf("step %d: %v is not a contiguous connected window, though one was free", step, got)
					}
					contiguous++
				} else {
					scattered++
				}

				resp, err := b.Allocate(context.Background(), got)
				if err != nil {
					t.Fatalf("step %d: Allocate(%v): %v", step, got, err)
				}
				cores := parseCores(t, resp.Envs[VisibleCoresEnv])
				wantDevs := map[string]bool{}
				for _, c := range cores {
					if k, dup := coreOwner[c]; dup {
						t.Fatalf("step %d: core %d handed out again (held by allocation %d)", step, c, k)
					}
					coreOwner[c] = step
					wantDevs[fmt.Sprintf("/dev/neuron%d", c/s.cores)] = true
				}
				if len(resp.Devices) != len(wantDevs) {
					t.Fatalf("step %d: %d device nodes for cores %v", step, len(resp.Devices), cores)
				}
				for _, d := range resp.Devices {
					if !wantDevs[d.HostPath] {
						t.Fatalf("step %d: device %s holds none of cores %v", step, d.HostPath, cores)
					}
				}
				for _, id := range got {
					owner[id] = step
				}
				held[step], heldCores[step] = got, cores
			}
			t.Logf("%d contiguous, %d scattered allocations", contiguous, scattered)
		})
	}
}

// windowExists says, by brute force, whether size consecutive free units on
// linked devices hold every unit of must.
func windowExists(t testing.TB, s shape, avail, must []string, size int) bool {
	free := map[int]bool{}
	for _, id := range avail {
		p, _ := unitOf(t, s, id)
		free[p] = true
	}
	var mustPos []int
	for _, id := range must {
		p, _ := unitOf(t, s, id)
		mustPos = append(mustPos, p)
	}
	perDev := 1
	if strings.HasPrefix(avail[0], "neuroncore") {
		perDev = s.cores
	}
	n := s.devices * perDev
next:
	for start := 0; start+size <= n; start++ {
		for p := start; p < start+size; p++ {
			if !free[p] {
				continue next
			}
		}
		for _, p := range mustPos {
			if p < start || p >= start+size {
				continue next
			}
		}
		if linked(s, start/perDev, (start+size-1)/perDev) {
			return true
		}
	}
	return false
}

func isWindow(t testing.TB, s shape, ids []string) bool {
	var ps, ds []int
	for _, id := range ids {
		p, d := unitOf(t, s, id)
		ps, ds = append(ps, p), append(ds, d)
	}
	slices.Sort(ps)
	for i := 1; i < len(ps); i++ {
		if ps[i] != ps[i-1]+1 {
			return false
		}
	}
	return linked(s, slices.Min(ds), slices.Max(ds))
}

func TestFormatCores(t *testing.T) {
	tests := []struct {
		cores []int
		want  string
	}{
		{nil, ""},
		{[]int{5}, "5"},
		{[]int{0, 1, 2, 3}, "0-3"},
		{[]int{0, 1, 3, 6, 7, 8}, "0-1,3,6-8"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := formatCores(tt.cores); got != tt.want {
				t.Errorf("formatCores(%v) = %q, want %q", tt.cores, got, tt.want)
			}
		})
	}
}

// BenchmarkPreferredAllocation times one preferred allocation on a
// trn2.48xlarge (16 devices, 128 cores) in core mode, on an empty instance
// and on one where a fixed random half of the cores is in use. It reports
// the largest block left free as a quality figure.
func BenchmarkPreferredAllocation(b *testing.B) {
	root := fakeSysfs(b, trn2())
	be := newBackend(b, root, ModeCore)
	devices, err := scan(root)
	if err != nil {
		b.Fatal(err)
	}
	be.install(devices)
	all := ids("neuroncore", 0, 127)
	rng := rand.New(rand.NewPCG(1, 2))
	var half []string
	for _, id := range all {
		if rng.IntN(2) == 0 {
			half = append(half, id)
		}
	}
	for _, state := range []struct {
		name  string
		avail []string
	}{{"empty", all}, {"half", half}} {
		for _, size := range []int{1, 4, 8, 32, 64} {
			if size > len(state.avail) {
				continue
			}
			// The baseline is what the kubelet does without a preferred
			// allocation: the first ids it has. free-block shows what the
			// topology-aware choice buys for the extra time.
			for _, impl := range []struct {
				name string
				pick func() ([]string, error)
			}{
				{"autonode", func() ([]string, error) { return be.PreferredAllocation(state.avail, nil, size) }},
				{"baseline", func() ([]string, error) { return state.avail[:size], nil }},
			} {
				b.Run(fmt.Sprintf("%s/size=%d/%s", state.name, size, impl.name), func(b *testing.B) {
					for b.Loop() {
						if _, err := impl.pick(); err != nil {
							b.Fatal(err)
						}
					}
					got, _ := impl.pick()
					free := make([]bool, 128)
					for _, id := range state.avail {
						free[be.layout.pos[id]] = true
					}
					for _, id := range got {
						free[be.layout.pos[id]] = false
					}
					b.ReportMetric(float64(be.layout.largestBlock(free)), "free-block")
					devices := map[int]bool{}
					for _, id := range got {
						devices[be.layout.pos[id]/8] = true // trn2: 8 cores a device
					}
					b.ReportMetric(float64(len(devices)), "devices")
				})
			}
		}
	}
}
