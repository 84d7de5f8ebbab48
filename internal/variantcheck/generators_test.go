package variantcheck

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/autonode/autonode/sandbox/ec2"
	"github.com/autonode/autonode/sandbox/imds"
	"github.com/autonode/autonode/sandbox/vpc"
)

// generatorChecks maps each setting the variant generates to a check of
// the JSON its generator prints, as Bottlerocket's aws-k8s settings model
// would accept it (max-pods u32, kube-reserved and eviction-hard maps over
// fixed keys of quantities). A generator without a check here fails
// TestAgentPackage, so a new one cannot go untested.
func generatorChecks() map[string]func(out []byte) error {
	return map[string]func([]byte) error{
		"settings.kubernetes.max-pods": func(out []byte) error {
			var n uint32
			if err := json.Unmarshal(out, &n); err != nil {
				return err
			}
			// m5.large: 3 ENIs of 10 addresses, (10-1)*3+2.
			if n != 29 {
				return fmt.Errorf("max-pods %d on m5.large, want 29", n)
			}
			return nil
		},
		"settings.kubernetes.kube-reserved": func(out []byte) error {
			return quantityMap(out, []string{"cpu", "memory", "ephemeral-storage"}, true)
		},
		"settings.kubernetes.eviction-hard": func(out []byte) error {
			return quantityMap(out, []string{"memory.available", "nodefs.available", "nodefs.inodesFree",
				"imagefs.available", "imagefs.inodesFree", "pid.available"}, false)
		},
	}
}

// quantityMap checks a JSON object whose keys come from keys (all of them
// when all is set) and whose values are Kubernetes quantities or, unless
// all is set, percentages.
func quantityMap(out []byte, keys []string, all bool) error {
	var m map[string]string
	if err := json.Unmarshal(out, &m); err != nil {
		return err
	}
	if len(m) == 0 {
		return fmt.Errorf("empty object")
	}
	for k, v := range m {
		if !slices.Contains(keys, k) {
			return fmt.Errorf("key %q is not one of %q", k, keys)
		}
		if p, ok := strings.CutSuffix(v, "%"); ok && !all {
			v = p
		}
		if _, err := resource.ParseQuantity(v); err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
	}
	if all && len(m) != len(keys) {
		return fmt.Errorf("keys %v, want %q", m, keys)
	}
	return nil
}

// runGenerators runs every setting generator of the variant's defaults the
// way sundog runs it on a node: the same command words, nothing added, with
// the shipped binary. Only the environment differs: it points the AWS SDK
// at the IMDS and EC2 emulators (an m5.large with a node role) instead of
// 169.254.169.254 and the region's endpoint. Every generator must exit 0
// and print a value of its setting's type; one that exits 2 even on a node
// with everything reachable would never set anything.
func runGenerators(t *testing.T, agent string) {
	model, err := vpc.New(vpc.Config{})
	if err != nil {
		t.Fatal(err)
	}
	inst, err := model.LaunchInstance("m5.large", model.Subnets()[0].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	imdsSrv := httptest.NewServer(imds.New(model, inst.ID, imds.Options{
		RoleName:    "autonode-node",
		Credentials: credentials.NewStaticCredentialsProvider("AKIDNODE", "node-secret", "node-session"),
	}))
	t.Cleanup(imdsSrv.Close)
	emulator, err := ec2.New(ec2.Options{Model: model})
	if err != nil {
		t.Fatal(err)
	}
	ec2Srv := httptest.NewServer(emulator)
	t.Cleanup(ec2Srv.Close)

	none := filepath.Join(t.TempDir(), "none")
	env := []string{
		"AWS_EC2_METADATA_SERVICE_ENDPOINT=" + imdsSrv.URL,
		"AWS_ENDPOINT_URL_EC2=" + ec2Srv.URL,
		"AWS_CONFIG_FILE=" + none,
		"AWS_SHARED_CREDENTIALS_FILE=" + none,
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") {
			env = append(env, kv)
		}
	}

	checks := generatorChecks()
	gens := generators(t)
	if len(gens) == 0 {
		t.Fatal("the defaults hold no setting generators")
	}
	for setting, command := range gens {
		t.Run(setting, func(t *testing.T) {
			args := strings.Fields(command)
			if args[0] != "/usr/bin/autonode-agent" {
				t.Fatalf("generator %q does not run the agent", command)
			}
			check, ok := checks[setting]
			if !ok {
				t.Fatalf("generator %q: no check of its output in generatorChecks", command)
			}
			cmd := exec.Command(agent, args[1:]...)
			cmd.Env = env
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("%s: %v (exit 2 means sundog skips it)\n%s", command, err, tail(stderr.String(), 20))
			}
			if err := check(bytes.TrimSpace(stdout.Bytes())); err != nil {
				t.Errorf("%s printed %q: %v", command, stdout.String(), err)
			}
		})
	}
}
