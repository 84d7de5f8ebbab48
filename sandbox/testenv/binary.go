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

// buildOnce builds the agent at most once per test process. It is
// package-level so that every test in the process shares the one binary.
var buildOnce = sync.OnceValues(buildAgent)

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
	bin, err := buildOnce()
	if err != nil {
		tb.Fatalf("testenv: building autonode-agent: %v", err)
	}
	return bin
}

func buildAgent() (string, error) {
	root, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("finding the module root: %w", err)
	}
	dir, err := os.MkdirTemp("", "autonode-agent-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "autonode-agent")
	cmd := exec.Command("go", "build", "-o", bin, "./agent/cmd/autonode-agent")
	cmd.Dir = strings.TrimSpace(string(root))
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%w\n%s", err, out)
	}
	return bin, nil
}
