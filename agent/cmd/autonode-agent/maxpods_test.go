package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestMaxPodsSubcommand asks the EC2 emulator through the real SDK, as the
// variant's settings generator would at boot.
func TestMaxPodsSubcommand(t *testing.T) {
	ec2URL := ec2Emulator(t, nil)
	offlineAWSEnv(t)

	tests := []struct {
		args []string
		want string
		err  string
	}{
		{[]string{"--instance-type", "m5.large"}, "29", ""},
		{[]string{"--instance-type", "m5.large", "--prefix-delegation"}, "110", ""},
		{[]string{"--instance-type", "m5.large", "--prefix-delegation", "--uncapped"}, "434", ""},
		{[]string{"--instance-type", "p4d.24xlarge"}, "250", ""},
		{[]string{"--instance-type", "p4d.24xlarge", "--uncapped"}, "737", ""},
		{[]string{"--instance-type", "t3.medium"}, "17", ""},
		{[]string{"--instance-type", "x9.huge"}, "", "InvalidInstanceType"},
		{[]string{}, "", "--instance-type is required"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"max-pods", "--region", "us-west-2", "--ec2-endpoint", ec2URL}, tt.args...)
			err := run(context.Background(), args, func(string) string { return "" }, &stdout, &stderr)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("run() = %v, want an error containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(stdout.String()); got != tt.want {
				t.Errorf("printed %q, want %q", got, tt.want)
			}
		})
	}
}
