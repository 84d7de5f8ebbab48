package identity

import (
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// benchClient keeps enough idle connections for every parallel worker.
func benchClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256}}
}

func benchGet(b *testing.B, c *http.Client, url, token string) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Authorization", token)
	resp, err := c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("status %d", resp.StatusCode)
	}
}

// BenchmarkCachedHits is the endpoint's throughput for cached credentials
// over loopback HTTP with keep-alive, client and server on the same cores.
func BenchmarkCachedHits(b *testing.B) {
	e := newEnv(b, envOptions{})
	token := e.mint(b, "ns-a", "sa-a")
	c := benchClient()
	defer c.CloseIdleConnections()
	benchGet(b, c, e.url, token) // fill the cache
	b.ReportAllocs()
	b.SetParallelism(4)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			benchGet(b, c, e.url, token)
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
	if calls := e.calls(); calls != 1 {
		b.Errorf("EKS Auth calls = %d, want 1", calls)
	}
}

// BenchmarkCachedHitsPaced5000 offers cached requests at a fixed 5,000 req/s
// (b.N requests, so about b.N/5000 seconds) and reports latency percentiles
// two ways: from the moment a worker sends the request (p99-ms, the
// endpoint's latency), and from the request's scheduled start
// (p99-sched-ms), which also charges requests for any lag of the generator
// or wait behind a stalled server (no coordinated omission). The pacer
// releases every request that is due on each wake-up, so a late timer does
// not slow the offered rate.
func BenchmarkCachedHitsPaced5000(b *testing.B) {
	const rate = 5000
	const workers = 64
	e := newEnv(b, envOptions{})
	token := e.mint(b, "ns-a", "sa-a")
	c := benchClient()
	defer c.CloseIdleConnections()
	benchGet(b, c, e.url, token)

	lat := make([]time.Duration, b.N)
	sched := make([]time.Duration, b.N)
	work := make(chan int, b.N)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	interval := time.Second / rate
	for range workers {
		wg.Go(func() {
			for i := range work {
				sent := time.Now()
				benchGet(b, c, e.url, token)
				lat[i] = time.Since(sent)
				sched[i] = time.Since(start.Add(time.Duration(i) * interval))
			}
		})
	}
	for i := 0; i < b.N; {
		due := min(b.N, int(time.Since(start)/interval)+1)
		for ; i < due; i++ {
			work <- i
		}
		time.Sleep(interval)
	}
	close(work)
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(lat)
	slices.Sort(sched)
	pct := func(d []time.Duration, p float64) float64 {
		return float64(d[min(len(d)-1, int(p*float64(len(d))))]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(lat, 0.50), "p50-ms")
	b.ReportMetric(pct(lat, 0.99), "p99-ms")
	b.ReportMetric(pct(lat, 0.999), "p99.9-ms")
	b.ReportMetric(pct(sched, 0.99), "p99-sched-ms")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
}
