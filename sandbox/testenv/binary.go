package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// AgentBinaryEnv names a prebuilt autonode-agent for tests to run; `make
// test` sets it to the binary it has just built, so parallel test packages do
// not each link their own.
const AgentBinaryEnv = "AUTONODE_AGENT_BIN"

// buildAgentOnce and buildCNIOnce build each binary at most once per test
// process. They are package-level so that every test in the process shares
// the one binary.
var (
	buildAgentOnce = sync.OnceValues(func() (string, error) { return build("autonode-agent") })
	buildCNIOnce   = sync.OnceValues(func() (string, error) { return build("autonode-cni") })
)

// AgentBinary returns an autonode-agent binary: $AUTONODE_AGENT_BIN when
// set, otherwise one built now (once per test process) from this checkout.
func AgentBinary(tb testing.TB) string {
	tb.Helper()
	if bin := os.Getenv(AgentBinaryEnv); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			tb.Fatalf("testenv: %s: %v", AgentBinaryEnv, err)
		}
		return bin
	}
	bin, err := buildAgentOnce()
	if err != nil {
		tb.Fatalf("testenv: building autonode-agent: %v", err)
	}
	return bin
}

// CNIBinary returns autonode-cni built from this checkout, once per test
// process, in a folder of its own (libcni finds plugins by folder).
func CNIBinary(tb testing.TB) string {
	tb.Helper()
	bin, err := buildCNIOnce()
	if err != nil {
		tb.Fatalf("testenv: building autonode-cni: %v", err)
	}
	return bin
}

func build(name string) (string, error) {
	root, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("finding the module root: %w", err)
	}
	dir, err := os.MkdirTemp("", name+"-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", bin, "./agent/cmd/"+name)
	cmd.Dir = strings.TrimSpace(string(root))
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%w\n%s", err, out)
	}
	return bin, nil
}
