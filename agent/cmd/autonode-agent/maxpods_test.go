package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/autonode/autonode/sandbox/ec2"
	"github.com/autonode/autonode/sandbox/vpc"
)

// TestMaxPodsSubcommand asks the EC2 emulator through the real SDK, as the
// variant's settings generator would at boot.
func TestMaxPodsSubcommand(t *testing.T) {
	model, err := vpc.New(vpc.Config{})
	if err != nil {
		t.Fatal(err)
	}
	emulator, err := ec2.New(ec2.Options{Model: model})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(emulator)
	t.Cleanup(srv.Close)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")

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
			args := append([]string{"max-pods", "--region", "us-west-2", "--ec2-endpoint", srv.URL}, tt.args...)
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
