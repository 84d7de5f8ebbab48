package ipam

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
)

func TestDecodeCheckpoint(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"empty pool", `{"version":1,"allocations":[]}`, true},
		{"one", `{"version":1,"allocations":[{"containerID":"c","ifName":"eth0","addr":"10.0.0.5","eni":"eni-1","created":"2026-01-01T00:00:00Z"}]}`, true},
		{"future version", `{"version":2,"allocations":[]}`, false},
		{"no version", `{"allocations":[]}`, false},
		{"truncated", `{"version":1,"allocations":[{"containerID":`, false},
		{"trailing data", `{"version":1} {}`, false},
		{"bad address", `{"version":1,"allocations":[{"containerID":"c","ifName":"eth0","addr":"10.0.0.300"}]}`, false},
		{"ipv6", `{"version":1,"allocations":[{"containerID":"c","ifName":"eth0","addr":"fd00::1"}]}`, false},
		{"no key", `{"version":1,"allocations":[{"containerID":"","ifName":"eth0","addr":"10.0.0.5"}]}`, false},
		{"duplicate key", `{"version":1,"allocations":[{"containerID":"c","ifName":"eth0","addr":"10.0.0.5"},{"containerID":"c","ifName":"eth0","addr":"10.0.0.6"}]}`, false},
		{"duplicate address", `{"version":1,"allocations":[{"containerID":"c","ifName":"eth0","addr":"10.0.0.5"},{"containerID":"d","ifName":"eth0","addr":"10.0.0.5"}]}`, false},
	}
	for _, tt := range tests {
		if _, err := decodeCheckpoint([]byte(tt.in)); (err == nil) != tt.ok {
			t.Errorf("%s: err = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func FuzzDecodeCheckpoint(f *testing.F) {
	f.Add([]byte(`{"version":1,"allocations":[{"containerID":"c","ifName":"eth0","addr":"10.0.0.5","eni":"eni-1","namespace":"ns","name":"p","created":"2026-01-01T00:00:00Z"}],"cooling":[{"addr":"10.0.0.6","until":"2026-01-01T00:00:30Z"}]}`))
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":1,"allocations":[{"containerID":`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := decodeCheckpoint(data)
		if err != nil {
			return
		}
		// What decodes must survive our own encoding unchanged.
		out, err := json.Marshal(c)
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", c, err)
		}
		back, err := decodeCheckpoint(out)
		if err != nil {
			t.Fatalf("decoding our own encoding %s: %v", out, err)
		}
		if !reflect.DeepEqual(normalize(c), normalize(back)) {
			t.Fatalf("round trip changed the checkpoint:\n%+v\n%+v", c, back)
		}
	})
}

// normalize drops what JSON does not round-trip exactly (monotonic clock
// readings, nil versus empty slices).
func normalize(c checkpoint) string {
	for i := range c.Allocations {
		c.Allocations[i].Created = c.Allocations[i].Created.Round(0)
	}
	return fmt.Sprintf("%d %v %v", c.Version, c.Allocations, fmt.Sprint(c.Cooling))
}
