package localnode

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/autonode/autonode/agent/kubenode"

	"github.com/autonode/autonode/sandbox/netnsutil"
	"github.com/autonode/autonode/sandbox/privileged"
	"github.com/autonode/autonode/sandbox/testenv"
)

// TestSandboxNodeReachesReady is `make run` without the terminal: it brings
// the sandbox node up with a freshly built agent, waits for the agent to be
// ready, and checks that Close leaves nothing behind.
func TestSandboxNodeReachesReady(t *testing.T) {
	privileged.Require(t, privileged.Root, privileged.NetAdmin, privileged.APIServer)
	assets, err := testenv.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	agent := testenv.AgentBinary(t)
	stateDir := t.TempDir()
	var steps []string
	ctx := context.Background()
	node, err := Up(ctx, Options{
		AgentBinary: agent,
		AssetsDir:   assets,
		StateDir:    stateDir,
		Progress:    func(s string) { steps = append(steps, s) },
	})
	if err != nil {
		t.Fatalf("Up: %v", err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			node.Close()
		}
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(stateDir, "agent.log"))
			t.Logf("steps:\n%s\nagent log:\n%s", strings.Join(steps, "\n"), log)
		}
	})
	if len(steps) < 8 {
		t.Errorf("%d progress lines, want one per step:\n%s", len(steps), strings.Join(steps, "\n"))
	}

	httpc := node.AgentHTTPClient()
	deadline := time.Now().Add(90 * time.Second)
	for {
		code, body, err := get(httpc, AgentStatusURL("/readyz")+"?verbose")
		if err == nil && code == http.StatusOK && strings.Contains(body, "[+]node ok") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent not ready: %d %q %v", code, body, err)
		}
		select {
		case <-node.AgentExited():
			t.Fatalf("agent exited: %v", node.AgentErr())
		case <-time.After(200 * time.Millisecond):
		}
	}
	// The agent removes the taint just after it reports ready.
	for {
		n, err := node.Client.CoreV1().Nodes().Get(ctx, node.InstanceID, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tainted := slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == kubenode.StartupTaintKey })
		if !tainted && n.Annotations[kubenode.VersionAnnotation] != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node not converged: taints %v, annotations %v", n.Spec.Taints, n.Annotations)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Pod Identity: a pod's token for the associated service account gets the
	// credentials that EKS Auth issued; another service account gets none.
	code, body, err := node.PodCredentials(ctx, DemoNamespace, DemoServiceAccount)
	if err != nil || code != http.StatusOK {
		t.Fatalf("pod identity for %s/%s: %d %s %v", DemoNamespace, DemoServiceAccount, code, body, err)
	}
	issued := node.EKSAuth.Issued()
	if len(issued) != 1 || !strings.Contains(string(body), issued[0].AccessKeyID) {
		t.Errorf("pod identity answered %s, want the credentials EKS Auth issued (%d issued)", body, len(issued))
	}
	if code, body, err := node.PodCredentials(ctx, DemoNamespace, "unassociated"); err != nil || code == http.StatusOK {
		t.Errorf("an unassociated service account got %d %s %v", code, body, err)
	}

	// The host must not see the node's IMDS address: it lives in the netns.
	if out, _ := exec.Command("ip", "-o", "addr", "show", "to", imdsAddr).Output(); len(out) > 0 {
		t.Errorf("the IMDS address leaked into the host namespace: %s", out)
	}

	pid := node.agent.Process.Pid
	netnsPath := filepath.Join(netnsutil.RunDir, node.NetnsName)
	closed = true
	if err := node.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := node.AgentErr(); err != nil {
		t.Errorf("agent exit after SIGTERM: %v", err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		t.Errorf("agent pid %d still alive after Close", pid)
	}
	if _, err := os.Stat(netnsPath); !os.IsNotExist(err) {
		t.Errorf("netns %s still present after Close (%v)", netnsPath, err)
	}
	for _, f := range []string{"admin.kubeconfig", "agent.kubeconfig", "agent.yaml", "agent-state", bpffsDir} {
		if _, err := os.Stat(filepath.Join(stateDir, f)); !os.IsNotExist(err) {
			t.Errorf("%s left behind", f)
		}
	}
}

func get(c *http.Client, url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}
