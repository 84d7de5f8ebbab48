package cni_test

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/autonode/autonode/agent/network/cni/cniwire"
	"github.com/autonode/autonode/agent/network/datapath/datapathtest"
)

// BenchmarkAdd times CNI ADD (and the DEL that follows) with a warm pool
// and pre-created pod namespaces: "binary" goes through libcni and the
// built autonode-cni, as a runtime does; "in-process" calls the server's
// Handle, without the exec and the socket. It reports p50 and p99 in ms.
func BenchmarkAdd(b *testing.B) {
	e := newEnv(b, envOptions{})
	pods := make([]*datapathtest.NS, 16)
	for i := range pods {
		pods[i] = e.node.NewPod(b)
	}
	list := e.confList(b, "1.0.0", nil, nil, nil)
	cfg, _ := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "autonode", "type": "autonode-cni"})

	b.Run("binary", func(b *testing.B) {
		var adds, dels []time.Duration
		i := 0
		for b.Loop() {
			rt := runtimeConf(pods[i%len(pods)], "bench-"+strconv.Itoa(i))
			i++
			start := time.Now()
			if _, err := e.add(b, list, rt); err != nil {
				b.Fatalf("ADD: %v", err)
			}
			mid := time.Now()
			if err := e.del(b, list, rt); err != nil {
				b.Fatalf("DEL: %v", err)
			}
			adds, dels = append(adds, mid.Sub(start)), append(dels, time.Since(mid))
		}
		report(b, "add", adds)
		report(b, "del", dels)
	})
	b.Run("in-process", func(b *testing.B) {
		var adds, dels []time.Duration
		i := 0
		for b.Loop() {
			pod := pods[i%len(pods)]
			req := cniwire.Request{Command: "ADD", ContainerID: "bench-ip-" + strconv.Itoa(i), Netns: pod.Path, IfName: "eth0", Config: cfg}
			i++
			start := time.Now()
			if r := e.srv.Handle(context.Background(), req); r.Error != nil {
				b.Fatalf("ADD: %v", r.Error)
			}
			mid := time.Now()
			req.Command = "DEL"
			if r := e.srv.Handle(context.Background(), req); r.Error != nil {
				b.Fatalf("DEL: %v", r.Error)
			}
			adds, dels = append(adds, mid.Sub(start)), append(dels, time.Since(mid))
		}
		report(b, "add", adds)
		report(b, "del", dels)
	})
}

func report(b *testing.B, what string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	pct := func(p float64) float64 {
		return float64(ds[min(len(ds)-1, int(p*float64(len(ds))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), what+"-p50-ms")
	b.ReportMetric(pct(0.99), what+"-p99-ms")
}
