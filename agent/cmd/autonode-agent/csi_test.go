package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/autonode/autonode/agent/storage/ebs"
	"github.com/autonode/autonode/sandbox/imds"
	"github.com/autonode/autonode/sandbox/vpc"
)

// TestVolumeLimitFromEmulator computes the CSI volume limit the way the
// agent does at start, from DescribeInstanceTypes served by the EC2
// emulator through the real SDK.
func TestVolumeLimitFromEmulator(t *testing.T) {
	client := ec2.New(ec2.Options{Region: "us-west-2", BaseEndpoint: aws.String(ec2Emulator(t, nil)),
		Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", "")})

	tests := []struct {
		instanceType string
		want         int64
	}{
		{"m5.large", 28 - 1 - 3},      // shared: root volume and 3 ENIs
		{"m5d.large", 28 - 1 - 3 - 1}, // and one NVMe instance-store disk
		{"m7i.large", 32 - 1},         // dedicated: only the root volume
	}
	for _, tt := range tests {
		t.Run(tt.instanceType, func(t *testing.T) {
			got, err := volumeLimit(t.Context(), client, tt.instanceType)
			if err != nil || got != tt.want {
				t.Errorf("volumeLimit = %d, %v; want %d", got, err, tt.want)
			}
		})
	}
	if _, err := volumeLimit(t.Context(), client, "x9.nonexistent"); err == nil {
		t.Error("volumeLimit of an unknown type succeeded")
	}
}

// The adapter keeps the locator's Verify, which the CSI driver calls right
// before it formats and mounts a device.
var _ interface {
	Verify(ctx context.Context, volumeID, devicePath string) error
} = ebsVolumes{}

// TestEBSVolumesNotFound: the CSI driver answers NOT_FOUND for errors that
// wrap fs.ErrNotExist, so the adapter must map the locator's "not attached"
// and malformed ids to it, and nothing else.
func TestEBSVolumesNotFound(t *testing.T) {
	v := ebsVolumes{ebs.NewLocator(ebs.LocatorOptions{DevRoot: t.TempDir()})}
	for _, id := range []string{"not-a-volume", "vol-0123456789abcdef0"} {
		_, err := v.Locate(t.Context(), id)
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Locate(%s) = %v, want an error wrapping fs.ErrNotExist", id, err)
		}
	}
	_, err := v.Locate(t.Context(), "vol-0123456789abcdef0")
	if !errors.Is(err, ebs.ErrVolumeNotFound) {
		t.Errorf("Locate lost the locator's error: %v", err)
	}
}

// TestAgentServesCSI runs the agent binary with the CSI node service on,
// against the IMDS and EC2 emulators, and plays the kubelet: the node id and
// zone come from the instance identity, the limit from DescribeInstanceTypes
// of an m5d.large (28 shared, less the root volume, 3 ENIs and 1 disk).
func TestAgentServesCSI(t *testing.T) {
	model, err := vpc.New(vpc.Config{})
	if err != nil {
		t.Fatal(err)
	}
	inst, err := model.LaunchInstance("m5d.large", model.Subnets()[0].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	imdsSrv := httptest.NewServer(imds.New(model, inst.ID, imds.Options{}))
	t.Cleanup(imdsSrv.Close)
	ec2URL := ec2Emulator(t, model)

	dir, err := os.MkdirTemp("", "csi") // unix socket paths are short
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	endpoint, registry := filepath.Join(dir, "csi.sock"), filepath.Join(dir, "registry")
	configFile := filepath.Join(dir, "agent.yaml")
	config := fmt.Sprintf("storage:\n  csi:\n    endpoint: %s\n    registrationDir: %s\n", endpoint, registry)
	// The apiserver is out of reach: the CSI node service does not need it.
	kubeconfig := filepath.Join(dir, "kubeconfig")
	for path, body := range map[string]string{configFile: config, kubeconfig: unreachableKubeconfig} {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The IMDS emulator serves no role: static keys sign for the EC2 one.
	creds := []string{"AWS_ACCESS_KEY_ID=AKIDTEST", "AWS_SECRET_ACCESS_KEY=secret"}
	agent := startAgent(t, creds, "--config", configFile, "--csi=true", "--imds-endpoint", imdsSrv.URL,
		"--ec2-endpoint", ec2URL, "--kubeconfig", kubeconfig, "--http-address", "127.0.0.1:0", "--log-format", "text")

	regSock := filepath.Join(registry, "ebs.csi.aws.com-reg.sock")
	eventually(t, "the registration socket", func() error { _, err := os.Stat(regSock); return err })
	reg := registerapi.NewRegistrationClient(dialUnix(t, regSock))
	info, err := reg.GetInfo(t.Context(), &registerapi.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.GetName() != "ebs.csi.aws.com" || info.GetEndpoint() != endpoint {
		t.Fatalf("GetInfo = %v", info)
	}
	node, err := csipb.NewNodeClient(dialUnix(t, info.GetEndpoint())).NodeGetInfo(t.Context(), &csipb.NodeGetInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if node.GetNodeId() != inst.ID || node.GetMaxVolumesPerNode() != 23 ||
		node.GetAccessibleTopology().GetSegments()["topology.kubernetes.io/zone"] != inst.Zone.Name {
		t.Errorf("NodeGetInfo = %v, want node %s, 23 volumes, zone %s", node, inst.ID, inst.Zone.Name)
	}
	if _, err := reg.NotifyRegistrationStatus(t.Context(), &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the registration in the agent's log", func() error {
		if !strings.Contains(agent.logs(), `msg="registered with the kubelet"`) {
			return errors.New("not logged yet")
		}
		return nil
	})
}

const unreachableKubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: https://127.0.0.1:1
contexts:
- name: c
  context: {cluster: c, user: u}
current-context: c
users:
- name: u
  user: {token: t}
`

func dialUnix(t *testing.T, socket string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}
