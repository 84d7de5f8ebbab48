package main

import (
	"bytes"
	"errors"
	"flag"
	"regexp"
	"strings"
	"testing"

	"github.com/autonode/autonode/sandbox/privileged"
	"github.com/autonode/autonode/sandbox/testenv"
)

// TestRunReachesAgentReady is `make run` up to "agent ready", then the
// teardown that Ctrl-C would trigger.
func TestRunReachesAgentReady(t *testing.T) {
	privileged.Require(t, privileged.Root, privileged.NetAdmin, privileged.APIServer)
	assets, err := testenv.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	agent := testenv.AgentBinary(t)
	var stdout, stderr bytes.Buffer
	err = run([]string{"--agent", agent, "--assets", assets, "--state-dir", t.TempDir(), "--exit-when-ready"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	out := stdout.String()
	if strings.Contains(out, "[sandbox] agent ready") && !regexp.MustCompile(`agent-version: [^(\s]`).MatchString(out) {
		t.Errorf("the node was never shown annotated with the agent version:\n%s", out)
	}
	for _, want := range []string{
		"[sandbox] IMDSv2 emulator on 169.254.169.254:80",
		"[sandbox] started autonode-agent",
		"[+]node ok",
		"agent-version: ", // followed by the version, checked below
		"[sandbox] agent ready",
		"[sandbox] pod identity: default/demo got credentials",
		"[sandbox] all removed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run([]string{"--help"}, &stdout, &stderr); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("run(--help) = %v", err)
	}
	for _, f := range []string{"-agent", "-assets", "-state-dir", "-instance-type", "-exit-when-ready"} {
		if !strings.Contains(stderr.String(), f) {
			t.Errorf("--help lacks %s", f)
		}
	}
}
