// Command benchratio reads `go test -bench` output on stdin, copies it to
// stdout, and then prints each autonode figure as a ratio of the baseline
// measured in the same run. A pair is two sub-benchmarks that differ only in
// their last name element, `autonode` and `baseline`; with -count N the
// median of the N runs is used.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// line matches "BenchmarkX/sub-8   100   123 ns/op   4.0 unit ...".
var line = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+(.*)$`)

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "benchratio:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	// samples[package+name][unit] lists every run's value.
	samples := map[string]map[string][]float64{}
	pkg := ""
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		text := sc.Text()
		fmt.Fprintln(out, text)
		if p, ok := strings.CutPrefix(text, "pkg: "); ok {
			pkg = p
			continue
		}
		m := line.FindStringSubmatch(text)
		if m == nil {
			continue
		}
		key := pkg + " " + m[1]
		fields := strings.Fields(m[2])
		for i := 0; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				continue
			}
			if samples[key] == nil {
				samples[key] = map[string][]float64{}
			}
			samples[key][fields[i+1]] = append(samples[key][fields[i+1]], v)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	var keys []string
	for k := range samples {
		if strings.HasSuffix(k, "/autonode") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	if len(keys) == 0 {
		return nil
	}
	fmt.Fprintln(out, "\nautonode / baseline, same run (median of runs; below 1 is faster or smaller):")
	for _, k := range keys {
		base := samples[strings.TrimSuffix(k, "/autonode")+"/baseline"]
		if base == nil {
			continue
		}
		var parts []string
		units := make([]string, 0, len(samples[k]))
		for u := range samples[k] {
			units = append(units, u)
		}
		sort.Strings(units)
		for _, u := range units {
			a, b := median(samples[k][u]), median(base[u])
			if b == 0 {
				continue
			}
			parts = append(parts, fmt.Sprintf("%s %.3gx (%.4g vs %.4g)", u, a/b, a, b))
		}
		fmt.Fprintf(out, "  %s: %s\n", strings.TrimSuffix(k, "/autonode"), strings.Join(parts, ", "))
	}
	return nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
