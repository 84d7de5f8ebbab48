package nvidia

import (
	"fmt"
	"log/slog"
	"slices"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Link scores between two GPUs; higher is closer. NVLink beats any PCIe
// path, and more NVLinks beat fewer.
const (
	scoreCrossSocket = 10 // TOPOLOGY_SYSTEM, or different NUMA nodes
	scoreSameNUMA    = 20 // TOPOLOGY_NODE
	scoreHostBridge  = 30 // TOPOLOGY_HOSTBRIDGE
	scoreMultiSwitch = 40 // TOPOLOGY_MULTIPLE
	scoreSameSwitch  = 50 // TOPOLOGY_SINGLE
	scoreSameBoard   = 60 // TOPOLOGY_INTERNAL
	scoreNVLink      = 100
)

// topology holds the link score of every pair of GPUs, by bus id.
type topology struct {
	score map[[2]string]int
}

func (t topology) pair(a, b string) int {
	if a > b {
		a, b = b, a
	}
	return t.score[[2]string{a, b}]
}

// measureTopology asks NVML how every pair of GPUs is connected. Queries
// that fail degrade to the NUMA comparison, never to an error: a worse
// preference is better than no plugin.
func measureTopology(log *slog.Logger, gpus []GPU) topology {
	links := make([]map[string]int, len(gpus))
	isGPU := make(map[string]bool, len(gpus))
	for i, g := range gpus {
		links[i] = nvlinkPeers(g)
		isGPU[g.BusID] = true
	}
	t := topology{score: map[[2]string]int{}}
	for i := range gpus {
		for j := i + 1; j < len(gpus); j++ {
			a, b := gpus[i], gpus[j]
			n := links[i][b.BusID]
			if n == 0 {
				// Through NVSwitches (DGX, p4d, p5) a GPU's links end at
				// switches; two GPUs on the same switch talk over NVLink.
				for peer, c := range links[i] {
					if !isGPU[peer] {
						n += min(c, links[j][peer])
					}
				}
			}
			s := 0
			if n > 0 {
				s = scoreNVLink + n
			} else {
				s = pcieScore(log, a, b)
			}
			t.score[[2]string{min(a.BusID, b.BusID), max(a.BusID, b.BusID)}] = s
		}
	}
	return t
}

// nvlinkPeers counts g's active NVLinks by the bus id at their far end.
func nvlinkPeers(g GPU) map[string]int {
	peers := map[string]int{}
	for link := range nvml.NVLINK_MAX_LINKS {
		state, ret := g.handle.GetNvLinkState(link)
		if ret != nvml.SUCCESS || state != nvml.FEATURE_ENABLED {
			continue
		}
		pci, ret := g.handle.GetNvLinkRemotePciInfo(link)
		if ret != nvml.SUCCESS {
			continue
		}
		if id, err := NormalizeBusID(cString(pci.BusId[:])); err == nil {
			peers[id]++
		}
	}
	return peers
}

func pcieScore(log *slog.Logger, a, b GPU) int {
	level, ret := a.handle.GetTopologyCommonAncestor(b.handle)
	if ret == nvml.SUCCESS {
		switch level {
		case nvml.TOPOLOGY_INTERNAL:
			return scoreSameBoard
		case nvml.TOPOLOGY_SINGLE:
			return scoreSameSwitch
		case nvml.TOPOLOGY_MULTIPLE:
			return scoreMultiSwitch
		case nvml.TOPOLOGY_HOSTBRIDGE:
			return scoreHostBridge
		case nvml.TOPOLOGY_NODE:
			return scoreSameNUMA
		case nvml.TOPOLOGY_SYSTEM:
			return scoreCrossSocket
		}
	} else {
		log.Debug("no PCIe topology for GPU pair; using NUMA", "gpu", a.BusID, "peer", b.BusID, "err", ret)
	}
	if a.NUMANode >= 0 && a.NUMANode == b.NUMANode {
		return scoreSameNUMA
	}
	return scoreCrossSocket
}

// exhaustiveLimit bounds the number of subsets PreferredAllocation scores
// one by one; C(16,8) is 12870, so every EC2 GPU instance stays exhaustive.
const exhaustiveLimit = 50000

// PreferredAllocation picks size GPUs from available, including mustInclude,
// whose weakest pairwise link is the strongest (NVLink > same PCIe switch >
// same NUMA node > cross-socket), then whose links sum highest, then that
// cut the fewest strong links to the GPUs left over, so that well-connected
// groups stay whole for later requests. Ties go to the lowest bus ids.
func (b *Backend) PreferredAllocation(available, mustInclude []string, size int) ([]string, error) {
	b.mu.Lock()
	topo := b.topo
	b.mu.Unlock()
	return preferred(topo, available, mustInclude, size)
}

func preferred(topo topology, available, mustInclude []string, size int) ([]string, error) {
	avail := slices.Clone(available)
	slices.Sort(avail)
	avail = slices.Compact(avail)
	must := slices.Clone(mustInclude)
	slices.Sort(must)
	must = slices.Compact(must)
	if size < len(must) || size > len(avail) {
		return nil, fmt.Errorf("preferred allocation: cannot pick %d of %d GPUs with %d required", size, len(avail), len(must))
	}
	for _, id := range must {
		if _, ok := slices.BinarySearch(avail, id); !ok {
			return nil, fmt.Errorf("preferred allocation: required GPU %s is not available", id)
		}
	}
	var rest []string
	for _, id := range avail {
		if _, ok := slices.BinarySearch(must, id); !ok {
			rest = append(rest, id)
		}
	}
	k := size - len(must)
	var pick []string
	if binomial(len(rest), k) <= exhaustiveLimit {
		pick = bestSubset(topo, avail, must, rest, k)
	} else {
		pick = greedy(topo, must, rest, k)
	}
	out := append(must, pick...)
	slices.Sort(out)
	return out, nil
}

// setScore ranks a candidate set; compare with better.
type setScore struct{ minPair, sumPair, cut int }

func (s setScore) better(o setScore) bool {
	if s.minPair != o.minPair {
		return s.minPair > o.minPair
	}
	if s.sumPair != o.sumPair {
		return s.sumPair > o.sumPair
	}
	return s.cut < o.cut
}

func scoreSet(topo topology, set []string, avail []string) setScore {
	s := setScore{minPair: int(^uint(0) >> 1)}
	if len(set) < 2 {
		s.minPair = 0
	}
	for i := range set {
		for j := i + 1; j < len(set); j++ {
			p := topo.pair(set[i], set[j])
			s.minPair = min(s.minPair, p)
			s.sumPair += p
		}
	}
	for _, o := range avail {
		if slices.Contains(set, o) {
			continue
		}
		for _, m := range set {
			s.cut += topo.pair(m, o)
		}
	}
	return s
}

// bestSubset tries every k-subset of rest, in lexicographic order.
func bestSubset(topo topology, avail, must, rest []string, k int) []string {
	idx := make([]int, k)
	for i := range idx {
		idx[i] = i
	}
	set := make([]string, len(must)+k)
	copy(set, must)
	var best []string
	var bestScore setScore
	for {
		for i, x := range idx {
			set[len(must)+i] = rest[x]
		}
		if s := scoreSet(topo, set, avail); best == nil || s.better(bestScore) {
			best, bestScore = slices.Clone(set[len(must):]), s
		}
		// Next combination.
		i := k - 1
		for i >= 0 && idx[i] == len(rest)-k+i {
			i--
		}
		if i < 0 {
			return best
		}
		idx[i]++
		for j := i + 1; j < k; j++ {
			idx[j] = idx[j-1] + 1
		}
	}
}

// greedy adds, one at a time, the GPU with the strongest links to the set so
// far; for machines too large to search.
func greedy(topo topology, must, rest []string, k int) []string {
	set := slices.Clone(must)
	left := slices.Clone(rest)
	for range k {
		bestI, bestS := 0, -1
		for i, c := range left {
			s := 0
			for _, m := range set {
				s += topo.pair(m, c)
			}
			if s > bestS {
				bestI, bestS = i, s
			}
		}
		set = append(set, left[bestI])
		left = slices.Delete(left, bestI, bestI+1)
	}
	return set[len(must):]
}

func binomial(n, k int) int {
	if k < 0 || k > n {
		return 0
	}
	k = min(k, n-k)
	r := 1
	for i := 1; i <= k; i++ {
		r = r * (n - k + i) / i
		if r > exhaustiveLimit {
			return r
		}
	}
	return r
}
