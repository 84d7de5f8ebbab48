package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/autonode/autonode/agent/kubenode"
	"github.com/autonode/autonode/deviceplugins/plugintest"
	"github.com/autonode/autonode/sandbox/imds"
	"github.com/autonode/autonode/sandbox/testenv"
	"github.com/autonode/autonode/sandbox/vpc"
)

// notifySocket collects sd_notify messages sent to a real unixgram socket.
type notifySocket struct {
	path string
	msgs chan string
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	s := &notifySocket{path: path, msgs: make(chan string, 1024)}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			s.msgs <- string(buf[:n])
		}
	}()
	return s
}

// waitFor returns the messages received up to and including want.
func (s *notifySocket) waitFor(t *testing.T, want string) []string {
	t.Helper()
	var seen []string
	timeout := time.After(60 * time.Second)
	for {
		select {
		case m := <-s.msgs:
			seen = append(seen, m)
			if m == want {
				return seen
			}
		case <-timeout:
			t.Fatalf("no %q from the agent; got %q", want, seen)
		}
	}
}

// drain returns what has arrived so far without waiting.
func (s *notifySocket) drain() []string {
	var seen []string
	for {
		select {
		case m := <-s.msgs:
			seen = append(seen, m)
		default:
			return seen
		}
	}
}

// sandboxInstance serves IMDS for one emulated instance on loopback.
func sandboxInstance(t *testing.T) (vpc.Instance, string) {
	t.Helper()
	model, err := vpc.New(vpc.Config{})
	if err != nil {
		t.Fatal(err)
	}
	inst, err := model.LaunchInstance("m5.large", model.Subnets()[0].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(imds.New(model, inst.ID, imds.Options{}))
	t.Cleanup(srv.Close)
	return inst, srv.URL
}

// statusAddr waits for the agent's log line naming the address its status
// server bound (the tests give it port 0, so no port can be stolen).
func statusAddr(t *testing.T, p *agentProc) string {
	t.Helper()
	re := regexp.MustCompile(`msg="status server listening".* address=(\S+)`)
	var addr string
	eventually(t, "the status server to listen", func() error {
		m := re.FindStringSubmatch(p.logs())
		if m == nil {
			return errors.New("no listening line yet")
		}
		addr = m[1]
		return nil
	})
	return addr
}

type agentProc struct {
	cmd  *exec.Cmd
	log  *bytes.Buffer
	mu   *sync.Mutex
	done chan error
}

func (p *agentProc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func startAgent(t *testing.T, env []string, args ...string) *agentProc {
	t.Helper()
	bin := testenv.AgentBinary(t)
	p := &agentProc{log: &bytes.Buffer{}, mu: &sync.Mutex{}, done: make(chan error, 1)}
	// Nothing the agent keeps or writes may land on the host's real paths.
	state := t.TempDir()
	// Pod networking would rewire the host's own netns; tests that want it
	// pass --network=true inside a namespace of their own.
	// The CSI node service would serve in the host's /var/lib/kubelet.
	args = append([]string{"--state-dir", state, "--console-path", filepath.Join(state, "console"), "--network=false", "--csi=false"}, args...)
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(cleanEnv(), env...)
	p.cmd.Stdout = lockedWriter{p.mu, p.log}
	p.cmd.Stderr = lockedWriter{p.mu, p.log}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		if t.Failed() {
			t.Logf("agent log:\n%s", p.logs())
		}
	})
	return p
}

// cleanEnv is this process's environment without the variables that would
// change the agent's behaviour under test.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AUTONODE_") || strings.HasPrefix(kv, "NOTIFY_SOCKET=") || strings.HasPrefix(kv, "WATCHDOG_") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func getStatus(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// TestAgentAgainstAPIServer runs the agent binary as a non-admin user bound
// only by deploy/rbac/agent.yaml, against a real kube-apiserver and the IMDS
// emulator, with a real NOTIFY_SOCKET.
func TestAgentAgainstAPIServer(t *testing.T) {
	env := testenv.Start(t, testenv.Options{RBACManifests: []string{"../../../deploy/rbac/agent.yaml"}})
	kubeconfig := env.UserKubeconfig(t, "autonode-agent", "autonode:agents")
	admin, err := kubernetes.NewForConfig(env.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	inst, imdsURL := sandboxInstance(t)
	providerID := "aws:///" + inst.Zone.Name + "/" + inst.ID
	notify := newNotifySocket(t)
	ctx := context.Background()

	agent := startAgent(t, []string{"NOTIFY_SOCKET=" + notify.path},
		"--imds-endpoint", imdsURL, "--kubeconfig", kubeconfig, "--http-address", "127.0.0.1:0", "--log-format", "text")
	statusAddr := statusAddr(t, agent)
	version := regexp.MustCompile(`msg="autonode-agent starting" version=(\S+)`).FindStringSubmatch(agent.logs())
	if version == nil {
		t.Fatal("no start line with the version")
	}

	// No Node yet: the agent is up but must not claim readiness.
	eventually(t, "the agent to report the node subsystem not ready", func() error {
		code, body, err := getStatus("http://" + statusAddr + "/readyz?verbose")
		if err != nil {
			return err
		}
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "[-]node not ready") {
			return fmt.Errorf("readyz %d: %s", code, body)
		}
		return nil
	})
	for _, m := range notify.drain() {
		if m == "READY=1" {
			t.Fatal("READY=1 sent before the Node existed")
		}
	}

	// The kubelet registers the Node under its DNS name, beside another
	// node, so the agent must find it by providerID.
	nodeName := inst.PrivateDNSName
	taints := []corev1.Taint{
		{Key: "example.com/keep", Effect: corev1.TaintEffectNoSchedule},
		{Key: kubenode.StartupTaintKey, Effect: corev1.TaintEffectNoSchedule},
	}
	for _, n := range []*corev1.Node{
		{ObjectMeta: metav1.ObjectMeta{Name: "decoy"}, Spec: corev1.NodeSpec{ProviderID: "aws:///us-west-2a/i-00000000000000000", Taints: taints}},
		{ObjectMeta: metav1.ObjectMeta{Name: nodeName}, Spec: corev1.NodeSpec{ProviderID: providerID, Taints: taints}},
	} {
		if _, err := admin.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	notify.waitFor(t, "READY=1")

	converged := func() error {
		n, err := admin.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if got := n.Annotations[kubenode.VersionAnnotation]; got != version[1] {
			return fmt.Errorf("annotation %s = %q", kubenode.VersionAnnotation, got)
		}
		for _, tn := range n.Spec.Taints {
			if tn.Key == kubenode.StartupTaintKey {
				return errors.New("startup taint still present")
			}
		}
		if len(n.Spec.Taints) == 0 || n.Spec.Taints[0].Key != "example.com/keep" {
			return fmt.Errorf("other taints lost: %v", n.Spec.Taints)
		}
		return nil
	}
	eventually(t, "annotation and taint removal", converged)
	// The health reporter, as the same non-admin user, writes the five
	// conditions; with no containerd here, ContainerRuntimeReady is False.
	eventually(t, "the five node conditions", func() error {
		n, err := admin.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		got := map[string]corev1.ConditionStatus{}
		for _, c := range n.Status.Conditions {
			got[string(c.Type)] = c.Status
		}
		for _, c := range []string{"KernelReady", "NetworkingReady", "StorageReady", "AcceleratedHardwareReady", "ContainerRuntimeReady"} {
			if _, ok := got[c]; !ok {
				return fmt.Errorf("no %s condition in %v", c, got)
			}
		}
		if _, err := os.Stat("/run/containerd/containerd.sock"); err != nil && got["ContainerRuntimeReady"] != corev1.ConditionFalse {
			return fmt.Errorf("ContainerRuntimeReady = %s without a containerd", got["ContainerRuntimeReady"])
		}
		return nil
	})
	decoy, err := admin.CoreV1().Nodes().Get(ctx, "decoy", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := decoy.Annotations[kubenode.VersionAnnotation]; ok || !slices.ContainsFunc(decoy.Spec.Taints, func(t corev1.Taint) bool { return t.Key == kubenode.StartupTaintKey }) {
		t.Errorf("the agent touched another node: annotations %v, taints %v", decoy.Annotations, decoy.Spec.Taints)
	}
	if code, body, err := getStatus("http://" + statusAddr + "/readyz?verbose"); err != nil || code != 200 || !strings.Contains(body, "[+]node ok") {
		t.Errorf("readyz after ready = %d %q %v", code, body, err)
	}

	// The apiserver goes away and comes back; then the Node is knocked out
	// of shape, and the agent must converge it again.
	start := time.Now()
	env.RestartAPIServer(t)
	t.Logf("apiserver restarted in %s", time.Since(start).Round(time.Millisecond))
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:null}},"spec":{"taints":[{"key":"example.com/keep","effect":"NoSchedule"},{"key":%q,"effect":"NoSchedule"}]}}`,
		kubenode.VersionAnnotation, kubenode.StartupTaintKey)
	eventually(t, "patching the node after the restart", func() error {
		_, err := admin.CoreV1().Nodes().Patch(ctx, nodeName, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
		return err
	})
	t.Logf("node patched %s after the restart began", time.Since(start).Round(time.Millisecond))
	eventually(t, "the agent to converge the node after an apiserver restart", converged)
	t.Logf("agent converged the node %s after the restart began", time.Since(start).Round(time.Millisecond))
	select {
	case err := <-agent.done:
		t.Fatalf("the agent exited during the apiserver restart: %v", err)
	default:
	}

	// SIGTERM: STOPPING=1, then a clean exit.
	if err := agent.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	notify.waitFor(t, "STOPPING=1")
	select {
	case err := <-agent.done:
		if err != nil {
			t.Fatalf("agent exit after SIGTERM: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("agent did not exit after SIGTERM")
	}
	if !strings.Contains(agent.logs(), "stopped cleanly") {
		t.Errorf("agent log lacks the clean stop line")
	}
}

// TestAgentWaitsForIMDS starts the agent with IMDS down; it must keep
// retrying, say so, and stop cleanly on SIGTERM.
func TestAgentWaitsForIMDS(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the agent binary")
	}
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "down", http.StatusInternalServerError)
	}))
	t.Cleanup(down.Close)
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\nusers: [{name: u, user: {token: t}}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	agent := startAgent(t, nil, "--imds-endpoint", down.URL, "--imds-timeout", "1s",
		"--kubeconfig", kubeconfig, "--http-address", "127.0.0.1:0")
	eventually(t, "a retry log line", func() error {
		if !strings.Contains(agent.logs(), "instance metadata service unavailable or invalid; retrying") {
			return errors.New("not yet")
		}
		return nil
	})
	if err := agent.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-agent.done:
		if err != nil {
			t.Fatalf("agent exit after SIGTERM while waiting for IMDS: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("agent did not exit after SIGTERM")
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"--log-level", "loud"}, func(string) string { return "" }, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "log.level (--log-level)") || !strings.Contains(err.Error(), "debug, info, warn, error") {
		t.Fatalf("run() = %v, want an error naming log.level and its allowed values", err)
	}
}

func TestRunPrintsConfig(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"--print-config", "--log-format", "text"}, func(string) string { return "" }, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "format: text") {
		t.Errorf("--print-config printed:\n%s", stdout.String())
	}
}

// TestAgentServesDevicePlugins gives the agent a Neuron sysfs tree and a
// kubelet that starts late: the startup taint must stay until the plugin has
// registered, and then go.
func TestAgentServesDevicePlugins(t *testing.T) {
	env := testenv.Start(t, testenv.Options{RBACManifests: []string{"../../../deploy/rbac/agent.yaml"}})
	kubeconfig := env.UserKubeconfig(t, "autonode-agent", "autonode:agents")
	admin, err := kubernetes.NewForConfig(env.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	inst, imdsURL := sandboxInstance(t)
	ctx := context.Background()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: inst.ID},
		Spec: corev1.NodeSpec{
			ProviderID: "aws:///" + inst.Zone.Name + "/" + inst.ID,
			Taints:     []corev1.Taint{{Key: kubenode.StartupTaintKey, Effect: corev1.TaintEffectNoSchedule}},
		},
	}
	if _, err := admin.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Two Neuron devices of two cores each, linked to each other.
	sysfs := t.TempDir()
	for i, peer := range []string{"1", "0"} {
		dir := filepath.Join(sysfs, "devices/virtual/neuron_device", fmt.Sprintf("neuron%d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, value := range map[string]string{"core_count": "2\n", "connected_devices": peer} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(value), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	pluginDir := plugintest.TempDir(t)

	agent := startAgent(t, nil, "--imds-endpoint", imdsURL, "--kubeconfig", kubeconfig, "--http-address", "127.0.0.1:0",
		"--log-format", "text", "--sysfs-root", sysfs, "--device-plugin-dir", pluginDir+"/")
	statusAddr := statusAddr(t, agent)
	const resource = "aws.amazon.com/neuroncore"
	eventually(t, "the node subsystem ready while the plugin waits for the kubelet", func() error {
		code, body, err := getStatus("http://" + statusAddr + "/readyz?verbose")
		if err != nil {
			return err
		}
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "[+]node ok") || !strings.Contains(body, "[-]deviceplugin:"+resource) {
			return fmt.Errorf("readyz %d: %s", code, body)
		}
		return nil
	})
	hasStartupTaint := func(n *corev1.Node) bool {
		return slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == kubenode.StartupTaintKey })
	}
	if n, err := admin.CoreV1().Nodes().Get(ctx, inst.ID, metav1.GetOptions{}); err != nil || !hasStartupTaint(n) {
		t.Fatalf("startup taint removed before the device plugin registered: %v %v", n.Spec.Taints, err)
	}

	kubelet := plugintest.NewKubelet(t, pluginDir)
	if reg := kubelet.WaitForRegistration(t, resource); reg.Version != "v1beta1" {
		t.Errorf("registered with API version %q", reg.Version)
	}
	kubelet.WaitForDevices(t, resource, func(ds []*pluginapi.Device) bool { return len(ds) == 4 })
	eventually(t, "the startup taint to go once the plugin is registered", func() error {
		n, err := admin.CoreV1().Nodes().Get(ctx, inst.ID, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if hasStartupTaint(n) {
			return fmt.Errorf("taints %v", n.Spec.Taints)
		}
		return nil
	})
}
