package kernel

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"testing"

	"github.com/autonode/autonode/health"
)

// loopSource returns n records from a corpus, round robin, then io.EOF; it
// stands in for /dev/kmsg so that the benchmark measures the monitor alone.
type loopSource struct {
	corpus [][]byte
	i, n   int
	seq    uint64
	buf    []byte
}

func (s *loopSource) Next() ([]byte, error) {
	if s.i == s.n {
		return nil, io.EOF
	}
	r := s.corpus[s.i%len(s.corpus)]
	s.i++
	s.seq++
	// Rewrite the sequence so that the monitor sees a gapless stream; a
	// repeated one would be skipped as already handled.
	s.buf = append(s.buf[:0], r[0], ',')
	s.buf = strconv.AppendUint(s.buf, s.seq, 10)
	s.buf = append(s.buf, r[3:]...)
	return s.buf, nil
}

func (s *loopSource) Close() error { return nil }

type discard struct{}

func (discard) Report(context.Context, health.Signal) {}

// benchCorpus is 100 records of which 2 match a rule: a busy node's mix of
// driver chatter and the odd problem. Each entry starts with its one-digit
// level and a placeholder sequence field.
func benchCorpus() [][]byte {
	benign := []string{
		"IPv6: ADDRCONF(NETDEV_CHANGE): eni3a7c9f1e2b4: link becomes ready",
		"cni0: port 3(veth5c1d2e3f) entered forwarding state",
		"eth0: renamed from tmp4f2a1",
		"device veth91ab23cd entered promiscuous mode",
		"audit: type=1400 audit(1700000000.123:456): apparmor=\"STATUS\" operation=\"profile_load\" name=\"cri-containerd.apparmor.d\" pid=4242 comm=\"apparmor_parser\"",
		"xfs filesystem being remounted at /var/lib/kubelet/pods/1234/volume-subpaths supports timestamps until 2038",
		"overlayfs: upperdir is in-use as upperdir/workdir of another mount, accessing files from both mounts will result in undefined behavior.",
		"TCP: request_sock_TCP: Possible SYN flooding on port 10250. Sending cookies.",
		"EXT4-fs (nvme1n1): mounted filesystem with ordered data mode. Quota mode: none.",
		"nvme nvme1: 2/0/0 default/read/poll queues",
	}
	matching := []string{
		"Memory cgroup out of memory: Killed process 6234 (java) total-vm:4194304kB, anon-rss:1048576kB, file-rss:2048kB, shmem-rss:0kB, UID:0 pgtables:2400kB oom_score_adj:-997",
		"NVRM: Xid (PCI:0000:10:1c): 13, pid=2871, name=python, Graphics SM Warp Exception on (GPC 0, TPC 1, SM 0): Out Of Range Address",
	}
	var out [][]byte
	for i := range 98 {
		out = append(out, fmt.Appendf(nil, "6,0,%d,-;%s\n", 1000000+i, benign[i%len(benign)]))
	}
	for i, m := range matching {
		out = append(out, fmt.Appendf(nil, "3,0,%d,-;%s\n", 2000000+i, m))
	}
	return out
}

// BenchmarkMonitor measures the monitor's cost per record: autonode runs the
// whole loop (read, parse, rules, report); baseline runs the same loop with
// no rules, so the ratio is the price of matching. cpu-at-10k/s is the share
// of one core the monitor would use at 10,000 records a second.
func BenchmarkMonitor(b *testing.B) {
	corpus := benchCorpus()
	for _, bc := range []struct {
		name  string
		rules []Rule
	}{
		{"autonode", DefaultRules()},
		{"baseline", []Rule{}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			src := &loopSource{corpus: corpus, n: b.N}
			m, err := New(Options{Reporter: discard{}, Rules: bc.rules,
				Open: func(string) (Source, error) { return src, nil }})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			if err := m.Run(b.Context()); err != nil {
				b.Fatal(err)
			}
			nsPerRecord := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			b.ReportMetric(nsPerRecord, "ns/record")
			b.ReportMetric(nsPerRecord*10000/1e9, "cpu-at-10k/s")
		})
	}
}
