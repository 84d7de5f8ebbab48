package v1

import (
	"encoding/json"
	"testing"
	"time"
)

func TestNillableDurationJSON(t *testing.T) {
	tests := []struct {
		in      string
		want    *time.Duration
		out     string
		wantErr bool
	}{
		{in: `"Never"`, out: `"Never"`},
		{in: `"30s"`, want: ptr(30 * time.Second), out: `"30s"`},
		{in: `"1h30m"`, want: ptr(90 * time.Minute), out: `"1h30m0s"`},
		{in: `"soon"`, wantErr: true},
		{in: `30`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var d NillableDuration
			err := json.Unmarshal([]byte(tt.in), &d)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("accepted %s", tt.in)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (d.Duration == nil) != (tt.want == nil) || (d.Duration != nil && *d.Duration != *tt.want) {
				t.Fatalf("duration = %v, want %v", d.Duration, tt.want)
			}
			out, err := json.Marshal(d)
			if err != nil || string(out) != tt.out {
				t.Fatalf("marshal = %s, %v; want %s", out, err, tt.out)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
