package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

// TestNodeconfigSubcommand asks the EC2 emulator through the real SDK, as
// the variant's settings generators do at boot.
func TestNodeconfigSubcommand(t *testing.T) {
	ec2URL := ec2Emulator(t, nil)
	offlineAWSEnv(t)

	ec2Flags := []string{"--region", "us-west-2", "--ec2-endpoint", ec2URL, "--instance-type", "m5.large"}
	tests := []struct {
		args     []string
		contains []string
		err      string
		skip     bool // exits 2, so sundog leaves the setting unset
	}{
		{append([]string{"max-pods"}, ec2Flags...), []string{"29\n"}, "", false},
		{append([]string{"kube-reserved"}, ec2Flags...), []string{`{"cpu":"70m","ephemeral-storage":"1Gi","memory":"574Mi"}`}, "", false},
		{[]string{"eviction-hard"}, []string{`"memory.available":"100Mi"`, `"nodefs.available":"10%"`, `"nodefs.inodesFree":"5%"`, `"imagefs.available":"15%"`}, "", false},
		{[]string{"cluster-dns-ip", "--cluster-dns", "10.100.0.10"}, []string{`["169.254.20.10","10.100.0.10"]`}, "", false},
		{append([]string{"kubelet-config", "--cluster-dns", "10.100.0.10"}, ec2Flags...), []string{`"maxPods":29`, `"NodeLogQuery":true`, `"enableSystemLogQuery":true`, `"clusterDNS":["169.254.20.10","10.100.0.10"]`, `"kubeReserved":{`}, "", false},
		{[]string{"containerd-config", "--sandbox-image", "localhost/pause:3.10"}, []string{"version = 3", "localhost/pause:3.10", "/opt/cni/bin"}, "", false},
		{[]string{"base-runtime-spec"}, []string{`"RLIMIT_MEMLOCK"`, `"hard": 18446744073709551615`}, "", false},
		{[]string{"cluster-dns-ip", "--cluster-dns", "10.100.0.300"}, nil, `DNS address "10.100.0.300"`, true},
		{[]string{"cluster-dns-ip"}, nil, "no --cluster-dns upstream", true},
		{[]string{"containerd-config"}, nil, "sandbox image is required", true},
		{[]string{"bogus"}, nil, `unknown key "bogus"`, false},
		{nil, nil, "a KEY is required", false},
		{[]string{"max-pods", "--no-such-flag"}, nil, "not defined", false},
		{append([]string{"max-pods"}, "--region", "us-west-2", "--ec2-endpoint", ec2URL, "--instance-type", "x9.huge"), nil, "InvalidInstanceType", true},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), append([]string{"nodeconfig"}, tt.args...), func(string) string { return "" }, &stdout, &stderr)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("run() = %v, want an error containing %q", err, tt.err)
				}
				var exit exitCodeError
				if skipped := errors.As(err, &exit) && exit.code == skipSetting; skipped != tt.skip {
					t.Errorf("run() = %v: exits 2 (skip) = %v, want %v", err, skipped, tt.skip)
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
