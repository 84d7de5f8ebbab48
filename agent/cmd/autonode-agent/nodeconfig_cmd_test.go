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

// TestNodeconfigSubcommand asks the EC2 emulator through the real SDK, as
// the variant's settings generators do at boot.
func TestNodeconfigSubcommand(t *testing.T) {
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

	ec2Flags := []string{"--region", "us-west-2", "--ec2-endpoint", srv.URL, "--instance-type", "m5.large"}
	tests := []struct {
		args     []string
		contains []string
		err      string
	}{
		{append([]string{"max-pods"}, ec2Flags...), []string{"29\n"}, ""},
		{append([]string{"kube-reserved"}, ec2Flags...), []string{`{"cpu":"70m","ephemeral-storage":"1Gi","memory":"574Mi"}`}, ""},
		{[]string{"eviction-hard"}, []string{`"memory.available":"100Mi"`, `"nodefs.available":"10%"`, `"nodefs.inodesFree":"5%"`, `"imagefs.available":"15%"`}, ""},
		{[]string{"cluster-dns-ip", "--cluster-dns", "10.100.0.10"}, []string{`["169.254.20.10","10.100.0.10"]`}, ""},
		{append([]string{"kubelet-config", "--cluster-dns", "10.100.0.10"}, ec2Flags...), []string{`"maxPods":29`, `"NodeLogQuery":true`, `"enableSystemLogQuery":true`, `"clusterDNS":["169.254.20.10","10.100.0.10"]`, `"kubeReserved":{`}, ""},
		{[]string{"containerd-config", "--sandbox-image", "localhost/pause:3.10"}, []string{"version = 3", "localhost/pause:3.10", "/opt/cni/bin"}, ""},
		{[]string{"base-runtime-spec"}, []string{`"RLIMIT_MEMLOCK"`, `"hard": 18446744073709551615`}, ""},
		{[]string{"cluster-dns-ip", "--cluster-dns", "10.100.0.300"}, nil, `DNS address "10.100.0.300"`},
		{[]string{"containerd-config"}, nil, "sandbox image is required"},
		{[]string{"bogus"}, nil, `unknown key "bogus"`},
		{nil, nil, "a KEY is required"},
		{append([]string{"max-pods"}, "--region", "us-west-2", "--ec2-endpoint", srv.URL, "--instance-type", "x9.huge"), nil, "InvalidInstanceType"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), append([]string{"nodeconfig"}, tt.args...), func(string) string { return "" }, &stdout, &stderr)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("run() = %v, want an error containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("run() = %v\n%s", err, stderr.String())
			}
			for _, want := range tt.contains {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("output lacks %q:\n%s", want, stdout.String())
				}
			}
		})
	}
}
