package neuron

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// device is one Neuron device as read from sysfs.
type device struct {
	index int
	cores int
	// neighbours are the device indices in connected_devices.
	neighbours []int
	healthy    bool
	reason     string
}

// layout numbers the allocatable units of one resource (cores or whole
// devices) in global order: device index, then core index within the device.
// The same order gives NEURON_RT_VISIBLE_CORES, so a run of consecutive units
// is one "a-b" range for the runtime.
type layout struct {
	mode           Mode
	coresPerDevice int
	// devices are sorted by index; unitDev refers to positions in it.
	devices []device
	ids     []string
	unitDev []int
	pos     map[string]int
	// connected[a][b] (a <= b) says whether devices[a..b] induce a connected
	// subgraph of the connected_devices graph, so that a window spanning them
	// can talk over device-to-device links without leaving the set.
	connected [][]bool
}

func coreID(global int) string  { return "neuroncore" + strconv.Itoa(global) }
func deviceID(index int) string { return "neuron" + strconv.Itoa(index) }

// newLayout builds the units of mode over devices, which must be sorted by
// index and share one core count.
func newLayout(mode Mode, devices []device) *layout {
	l := &layout{mode: mode, devices: devices, pos: map[string]int{}}
	if len(devices) > 0 {
		l.coresPerDevice = devices[0].cores
	}
	for p, d := range devices {
		if mode == ModeDevice {
			l.add(deviceID(d.index), p)
			continue
		}
		for c := range d.cores {
			l.add(coreID(d.index*l.coresPerDevice+c), p)
		}
	}
	l.connected = connectedRanges(devices)
	return l
}

func (l *layout) add(id string, devPos int) {
	l.pos[id] = len(l.ids)
	l.ids = append(l.ids, id)
	l.unitDev = append(l.unitDev, devPos)
}

// connectedRanges computes, for every range of device positions, whether the
// devices in it form a connected subgraph. At most 16 devices per instance
// make the quadratic number of small searches cheap; it runs on discovery.
func connectedRanges(devices []device) [][]bool {
	n := len(devices)
	posOf := make(map[int]int, n)
	for p, d := range devices {
		posOf[d.index] = p
	}
	adj := make([][]int, n)
	for p, d := range devices {
		for _, nb := range d.neighbours {
			if q, ok := posOf[nb]; ok && q != p {
				adj[p] = append(adj[p], q)
				// connected_devices should be symmetric; do not rely on it.
				adj[q] = append(adj[q], p)
			}
		}
	}
	out := make([][]bool, n)
	for a := range n {
		out[a] = make([]bool, n)
		for b := a; b < n; b++ {
			seen := map[int]bool{a: true}
			stack := []int{a}
			for len(stack) > 0 {
				p := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				for _, q := range adj[p] {
					if q >= a && q <= b && !seen[q] {
						seen[q] = true
						stack = append(stack, q)
					}
				}
			}
			out[a][b] = len(seen) == b-a+1
		}
	}
	return out
}

// cores returns the global core indices behind unit position p.
func (l *layout) cores(p int) []int {
	d := l.devices[l.unitDev[p]]
	if l.mode == ModeDevice {
		out := make([]int, d.cores)
		for c := range d.cores {
			out[c] = d.index*l.coresPerDevice + c
		}
		return out
	}
	id := l.ids[p]
	g, _ := strconv.Atoi(strings.TrimPrefix(id, "neuroncore"))
	return []int{g}
}

// windowOK reports whether units [s, e) sit on devices that are connected.
func (l *layout) windowOK(s, e int) bool {
	return l.connected[l.unitDev[s]][l.unitDev[e-1]]
}

// prefer picks size units from available, including mustInclude. It returns
// the chosen unit positions in order and whether they form one contiguous,
// connected window. See the package doc for the rules.
func (l *layout) prefer(available, mustInclude []string, size int) ([]int, bool, error) {
	n := len(l.ids)
	free := make([]bool, n)
	must := make([]bool, n)
	nfree, nmust := 0, 0
	for _, id := range available {
		p, ok := l.pos[id]
		if !ok {
			return nil, false, fmt.Errorf("unknown device id %q", id)
		}
		if !free[p] {
			free[p] = true
			nfree++
		}
	}
	for _, id := range mustInclude {
		p, ok := l.pos[id]
		if !ok {
			return nil, false, fmt.Errorf("unknown device id %q", id)
		}
		if !free[p] {
			return nil, false, fmt.Errorf("device id %q must be included but is not available", id)
		}
		if !must[p] {
			must[p] = true
			nmust++
		}
	}
	switch {
	case size <= 0:
		return nil, false, fmt.Errorf("allocation size %d: must be positive", size)
	case size > nfree:
		return nil, false, fmt.Errorf("allocation size %d: only %d ids available", size, nfree)
	case nmust > size:
		return nil, false, fmt.Errorf("allocation size %d: %d ids must be included", size, nmust)
	}

	freePre := make([]int, n+1)
	mustPre := make([]int, n+1)
	runStart := make([]int, n)
	runEnd := make([]int, n)
	for i := range n {
		freePre[i+1] = freePre[i] + b2i(free[i])
		mustPre[i+1] = mustPre[i] + b2i(must[i])
		if free[i] {
			runStart[i] = i
			if i > 0 && free[i-1] {
				runStart[i] = runStart[i-1]
			}
		}
	}
	for i := n - 1; i >= 0; i-- {
		if free[i] {
			runEnd[i] = i + 1
			if i+1 < n && free[i+1] {
				runEnd[i] = runEnd[i+1]
			}
		}
	}

	// Units per device, where each device's units start, and how many of
	// them are free.
	devStart := make([]int, len(l.devices)+1)
	devFree := make([]int, len(l.devices))
	for p, d := range l.unitDev {
		devStart[d+1] = p + 1
		devFree[d] += b2i(free[p])
	}
	// breaks counts the wholly free devices that window [s, e) would take
	// only part of; only its end devices can be taken in part.
	breaks := func(s, e int) int {
		n := 0
		for _, d := range []int{l.unitDev[s], l.unitDev[e-1]} {
			size := devStart[d+1] - devStart[d]
			taken := min(e, devStart[d+1]) - max(s, devStart[d])
			if devFree[d] == size && taken < size {
				n++
			}
			if l.unitDev[s] == l.unitDev[e-1] {
				break
			}
		}
		return n
	}

	// Score windows lexicographically: fewest devices spanned (cores within
	// one device first), then fewest wholly free devices broken into (keep
	// whole devices for whole-device requests), then the tightest free run
	// that holds the window (best fit keeps large runs for large requests),
	// then a window at an edge of its run (one leftover piece rather than
	// two), then the lowest position. Prefix sums make each candidate O(1).
	best, bestScore := -1, [4]int{}
	for s := 0; s+size <= n; s++ {
		e := s + size
		if freePre[e]-freePre[s] != size || mustPre[e]-mustPre[s] != nmust || !l.windowOK(s, e) {
			continue
		}
		edge := 1
		if s == runStart[s] || e == runEnd[s] {
			edge = 0
		}
		score := [4]int{l.unitDev[e-1] - l.unitDev[s], breaks(s, e), runEnd[s] - runStart[s], edge}
		if best < 0 || lessScore(score, bestScore) {
			best, bestScore = s, score
		}
	}
	if best >= 0 {
		out := make([]int, size)
		for i := range out {
			out[i] = best + i
		}
		return out, true, nil
	}
	return l.fallback(free, must, runStart, runEnd, size), false, nil
}

// fallback is used when no contiguous connected window fits: it keeps the
// mustInclude units, then prefers units on devices already chosen, then
// units from the longest free runs, so the result has few pieces.
func (l *layout) fallback(free, must []bool, runStart, runEnd []int, size int) []int {
	chosen := make([]bool, len(free))
	usedDev := map[int]bool{}
	var out []int
	take := func(p int) {
		chosen[p] = true
		usedDev[l.unitDev[p]] = true
		out = append(out, p)
	}
	for p, m := range must {
		if m {
			take(p)
		}
	}
	for len(out) < size {
		best := -1
		for p := range free {
			if !free[p] || chosen[p] {
				continue
			}
			if best < 0 || fallbackBetter(p, best, usedDev[l.unitDev[p]], usedDev[l.unitDev[best]], runEnd[p]-runStart[p], runEnd[best]-runStart[best]) {
				best = p
			}
		}
		take(best)
	}
	slices.Sort(out)
	return out
}

func fallbackBetter(p, q int, pUsed, qUsed bool, pRun, qRun int) bool {
	if pUsed != qUsed {
		return pUsed
	}
	if pRun != qRun {
		return pRun > qRun
	}
	return p < q
}

// largestBlock is the largest number of units that one more request could
// still get as a contiguous connected window from free: the fragmentation
// figure published as a gauge.
func (l *layout) largestBlock(free []bool) int {
	best := 0
	n := len(free)
	for s := 0; s < n; s++ {
		if !free[s] {
			continue
		}
		e := s
		for e < n && free[e] {
			e++
		}
		// e is the end of the free run that s starts in or lies within.
		for end := e; end-s > best; end-- {
			if l.windowOK(s, end) {
				best = end - s
				break
			}
		}
	}
	return best
}

// formatCores renders sorted global core indices the way the Neuron runtime
// reads NEURON_RT_VISIBLE_CORES: "a-b" ranges joined by commas.
func formatCores(cores []int) string {
	var b strings.Builder
	for i := 0; i < len(cores); {
		j := i
		for j+1 < len(cores) && cores[j+1] == cores[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(cores[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(cores[j]))
		}
		i = j + 1
	}
	return b.String()
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func lessScore(a, b [4]int) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}
