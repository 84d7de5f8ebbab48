package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRatios(t *testing.T) {
	in := `goos: linux
pkg: example.com/p
BenchmarkX/size=1/autonode-2    100   300 ns/op   2.0 devices
BenchmarkX/size=1/baseline-2    100   100 ns/op   4.0 devices
BenchmarkX/size=1/autonode-2    100   500 ns/op   2.0 devices
BenchmarkX/size=1/baseline-2    100   100 ns/op   4.0 devices
BenchmarkX/size=1/autonode-2    100   400 ns/op   2.0 devices
BenchmarkY/alone-2              100   7 ns/op
ok   example.com/p 1.0s
`
	var out bytes.Buffer
	if err := run(strings.NewReader(in), &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if !strings.HasPrefix(got, in) {
		t.Errorf("input not copied through:\n%s", got)
	}
	want := "example.com/p BenchmarkX/size=1: devices 0.5x (2 vs 4), ns/op 4x (400 vs 100)"
	if !strings.Contains(got, want) {
		t.Errorf("ratios missing %q:\n%s", want, got)
	}
	if strings.Contains(got, "BenchmarkY") && strings.Count(got, "BenchmarkY") > 1 {
		t.Errorf("a benchmark without a baseline got a ratio:\n%s", got)
	}
}
