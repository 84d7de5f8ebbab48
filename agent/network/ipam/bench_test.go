package ipam

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkAllocateWarm measures Allocate plus Release against a warm pool:
// in memory, no EC2 call, but with the two checkpoint writes (fsync
// included) that make each change durable.
func BenchmarkAllocateWarm(b *testing.B) {
	b.Run("autonode", func(b *testing.B) {
		e := newEnv(b, "m5.4xlarge")
		p := e.started(b, func(c *Config) { c.Targets = &Targets{MinimumIP: 200}; c.Cooldown = time.Nanosecond })
		e.settle(b, p)
		for i := range 100 { // a realistically full checkpoint
			e.allocate(b, p, fmt.Sprint("resident", i))
		}
		k := key("bench")
		b.ResetTimer()
		for b.Loop() {
			if _, err := p.Allocate(b.Context(), k, PodMeta{Namespace: "ns", Name: "pod"}); err != nil {
				b.Fatal(err)
			}
			if err := p.Release(b.Context(), k); err != nil {
				b.Fatal(err)
			}
			e.clock.Advance(time.Microsecond) // past the cooldown
		}
	})
}
