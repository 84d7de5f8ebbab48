package main

import (
	"net/http/httptest"
	"testing"

	"github.com/autonode/autonode/sandbox/ec2"
	"github.com/autonode/autonode/sandbox/vpc"
)

// ec2Emulator serves the EC2 emulator over model (a fresh VPC model when
// nil) on loopback until the test ends, and returns its URL.
func ec2Emulator(t *testing.T, model *vpc.Model) string {
	t.Helper()
	if model == nil {
		var err error
		if model, err = vpc.New(vpc.Config{}); err != nil {
			t.Fatal(err)
		}
	}
	emulator, err := ec2.New(ec2.Options{Model: model})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(emulator)
	t.Cleanup(srv.Close)
	return srv.URL
}

// offlineAWSEnv gives the SDK's default credential chain fixed keys and
// keeps it off this machine's IMDS and AWS files, as the subcommands that
// build their own client use that chain.
func offlineAWSEnv(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
}
