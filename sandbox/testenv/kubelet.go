package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/autonode/autonode/sandbox/privileged"
)

// systemContainerd is where a containerd started by the host listens.
const systemContainerd = "/run/containerd/containerd.sock"

// kubeletDevicePluginPath is where every kubelet serves kubelet.sock.
const kubeletDevicePluginPath = "/var/lib/kubelet/device-plugins"

// overlaid are the host folders where the kubelet writes whatever its flags
// say; in its namespace, overlays take those writes (see namespaceScript).
var overlaid = []string{"/var/lib", "/var/log"}

// kernelTunables are the sysctls the kubelet sets on the host at start
// (pkg/kubelet/cm setupKernelTunables: vm.overcommit_memory=1,
// kernel.panic=10, kernel.panic_on_oops=1, ...). The kubelet of a test sees
// private, writable copies of them, so the host keeps its own values.
var kernelTunables = []string{
	"vm/overcommit_memory",
	"vm/panic_on_oom",
	"kernel/panic",
	"kernel/panic_on_oops",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
}

// KubeletOptions configures StartKubelet.
type KubeletOptions struct {
	// NodeName is the Node the kubelet registers (its hostname override).
	// Default is "kubelet-" and a random suffix, unique per test.
	NodeName string
	// RuntimeEndpoint is the CRI endpoint, such as
	// unix:///run/containerd/containerd.sock. By default the kubelet uses
	// the host's containerd when one answers the CRI there, and otherwise a
	// private containerd that the test starts and stops.
	RuntimeEndpoint string
}

// Kubelet is a real kubelet, registered as a Node with an Env. It runs
// under its own root folder and in a mount namespace of its own, so the
// host's /var/lib/kubelet, /var/log and sysctls are never touched, and it
// stops when the test ends.
type Kubelet struct {
	// NodeName is the name of the kubelet's Node.
	NodeName string
	// RootDir is the kubelet's --root-dir.
	RootDir string
	// RuntimeEndpoint is the CRI endpoint the kubelet uses.
	RuntimeEndpoint string
}

// DevicePluginDir is the kubelet's device-plugin folder, where it serves
// kubelet.sock and where device plugins put their sockets.
func (k *Kubelet) DevicePluginDir() string { return filepath.Join(k.RootDir, "device-plugins") }

// KubeletBinary returns the kubelet that hack/testenv.sh builds into the
// assets folder.
func KubeletBinary() (string, error) {
	assets, err := AssetsDir()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(assets, "kubelet")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("kubelet binary: %w (build it with hack/testenv.sh)", err)
	}
	return bin, nil
}

// StartKubelet runs a kubelet (and, when needed, containerd) against env,
// as the user system:node:<name> bound to the system:node ClusterRole, and
// returns once its Node exists and its device-plugin kubelet.sock is up.
// Everything stops and is removed when the test ends. It needs root, and
// skips (fails with CI=true) when the kubelet, containerd or unshare is
// missing. With no CNI configured the Node stays NotReady, which is enough
// for device-plugin registration and advertised capacity; no pods can run.
func StartKubelet(tb testing.TB, env *Env, opts KubeletOptions) *Kubelet {
	tb.Helper()
	privileged.Require(tb, privileged.Root)
	bin, err := KubeletBinary()
	if err != nil {
		privileged.Missing(tb, "kubelet", err)
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		privileged.Missing(tb, "unshare", err)
	}
	if opts.NodeName == "" {
		opts.NodeName = "kubelet-" + randomSuffix(tb)
	}
	k := &Kubelet{NodeName: opts.NodeName, RuntimeEndpoint: opts.RuntimeEndpoint}
	if k.RuntimeEndpoint == "" {
		k.RuntimeEndpoint = containerdEndpoint(tb, env)
	}
	// A short folder: the kubelet and device plugins put unix sockets in it.
	k.RootDir = shortTempDir(tb, "kl")
	kubeconfig := env.nodeKubeconfig(tb, k.NodeName)

	start := time.Now()
	var lastErr error
	for attempt := range 3 {
		// A port taken between freePort and the kubelet's bind makes it
		// exit; then try others.
		port, err := freePort()
		if err != nil {
			tb.Fatalf("testenv: kubelet %s: %v", k.NodeName, err)
		}
		healthz, err := freePort()
		if err != nil {
			tb.Fatalf("testenv: kubelet %s: %v", k.NodeName, err)
		}
		config := filepath.Join(k.RootDir, fmt.Sprintf("config-%d.json", attempt))
		if err := writeKubeletConfig(config, k, port, healthz); err != nil {
			tb.Fatalf("testenv: kubelet %s: %v", k.NodeName, err)
		}
		script, err := k.namespaceScript()
		if err != nil {
			tb.Fatalf("testenv: kubelet %s: %v", k.NodeName, err)
		}
		// A mount namespace of its own keeps the kubelet off the host's
		// /var/lib/kubelet and sysctls; see namespaceScript.
		args := []string{"--mount", "--propagation=private", "--", "/bin/sh", "-ec", script, "kubelet",
			bin,
			"--config=" + config,
			"--kubeconfig=" + kubeconfig,
			"--root-dir=" + k.RootDir,
			// Its default is /var/lib/kubelet/pki, whatever --root-dir says.
			"--cert-dir=" + filepath.Join(k.RootDir, "pki"),
			"--hostname-override=" + k.NodeName,
			"--v=2",
		}
		c, err := env.runComponent(tb, "kubelet-"+k.NodeName, unshare, args, attempt)
		if err != nil {
			tb.Fatalf("testenv: %v", err)
		}
		lastErr = waitHealthy(c, fmt.Sprintf("http://127.0.0.1:%d/healthz", healthz))
		if lastErr == nil {
			lastErr = k.waitRegistered(env, c)
		}
		if lastErr == nil {
			tb.Logf("testenv: kubelet %s registered in %s (runtime %s, root %s)",
				k.NodeName, time.Since(start).Round(time.Millisecond), k.RuntimeEndpoint, k.RootDir)
			return k
		}
		select {
		case <-c.done:
			if portTaken(c.log) {
				continue
			}
		default:
		}
		tb.Fatalf("testenv: kubelet %s: %v", k.NodeName, lastErr)
	}
	tb.Fatalf("testenv: kubelet %s did not start: %v", k.NodeName, lastErr)
	return nil
}

// waitRegistered waits until the kubelet's Node exists and its
// device-plugin kubelet.sock is there.
func (k *Kubelet) waitRegistered(env *Env, c *component) error {
	cs, err := kubernetes.NewForConfig(env.AdminConfig())
	if err != nil {
		return fmt.Errorf("client for Node %s: %w", k.NodeName, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	sock := filepath.Join(k.DevicePluginDir(), "kubelet.sock")
	var last error
	err = wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		select {
		case <-c.done:
			return false, fmt.Errorf("kubelet exited: %w", c.err)
		default:
		}
		if _, last = os.Stat(sock); last != nil {
			return false, nil
		}
		_, last = cs.CoreV1().Nodes().Get(ctx, k.NodeName, metav1.GetOptions{})
		return last == nil, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for Node %s and %s: %w (last: %v)", k.NodeName, sock, err, last)
	}
	return nil
}

// namespaceScript returns the shell script that prepares the kubelet's
// private mount namespace and then execs the kubelet ("$@"):
//
//   - The kubelet's device manager serves kubelet.sock in the fixed
//     /var/lib/kubelet/device-plugins/ (pluginapi.DevicePluginPath), whatever
//     --root-dir says, and it creates /var/log/containers. Overlays over
//     /var/lib and /var/log, whose upper layers are a private tmpfs, take
//     those writes, and DevicePluginDir is bound over the device-plugin
//     path, so nothing is created on the host.
//   - A private, writable copy of each kernel tunable is bound over
//     /proc/sys, so the kubelet's sysctl writes land in the copies.
func (k *Kubelet) namespaceScript() (string, error) {
	scratch := filepath.Join(k.RootDir, "ns")
	copies := filepath.Join(k.RootDir, "sysctl")
	for _, d := range []string{scratch, copies, k.DevicePluginDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return "", fmt.Errorf("kubelet namespace folder: %w", err)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "mount -t tmpfs -o mode=0700 tmpfs %s\n", shellQuote(scratch))
	for i, dir := range overlaid {
		upper, work := filepath.Join(scratch, strconv.Itoa(i), "upper"), filepath.Join(scratch, strconv.Itoa(i), "work")
		fmt.Fprintf(&b, "mkdir -p %s %s\n", shellQuote(upper), shellQuote(work))
		fmt.Fprintf(&b, "mount -t overlay -o %s overlay %s\n",
			shellQuote(fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", dir, upper, work)), dir)
	}
	fmt.Fprintf(&b, "mkdir -p %[1]s\nmount --bind %[2]s %[1]s\n", kubeletDevicePluginPath, shellQuote(k.DevicePluginDir()))
	for _, name := range kernelTunables {
		host := filepath.Join("/proc/sys", name)
		val, err := os.ReadFile(host)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("reading sysctl %s: %w", host, err)
		}
		copyPath := filepath.Join(copies, strings.ReplaceAll(name, "/", "."))
		if err := os.WriteFile(copyPath, val, 0o600); err != nil {
			return "", fmt.Errorf("copy of sysctl %s: %w", host, err)
		}
		fmt.Fprintf(&b, "mount --bind %s %s\n", shellQuote(copyPath), host)
	}
	b.WriteString(`exec "$@"` + "\n")
	return b.String(), nil
}

// writeKubeletConfig writes the KubeletConfiguration for one start.
func writeKubeletConfig(path string, k *Kubelet, port, healthz int) error {
	cfg := map[string]any{
		"kind":       "KubeletConfiguration",
		"apiVersion": "kubelet.config.k8s.io/v1beta1",
		// This machine mounts cgroup v1 (hybrid); the kubelet refuses v1
		// unless told otherwise.
		"failCgroupV1": false,
		"failSwapOn":   false,
		"cgroupDriver": "cgroupfs", // no systemd, no D-Bus
		// No kubepods cgroups: the kubelet leaves the host's cgroup tree
		// alone, and parallel kubelets cannot share one.
		"cgroupsPerQOS":            false,
		"enforceNodeAllocatable":   []string{},
		"containerRuntimeEndpoint": k.RuntimeEndpoint,
		"address":                  "127.0.0.1",
		"port":                     port,
		"readOnlyPort":             0,
		"healthzBindAddress":       "127.0.0.1",
		"healthzPort":              healthz,
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": true},
			"webhook":   map[string]any{"enabled": false},
		},
		"authorization": map[string]any{"mode": "AlwaysAllow"},
		"staticPodPath": "",
		"resolvConf":    "", // no pods run
		// Only one threshold, so a busy test machine evicts nothing and
		// reports no disk pressure.
		"evictionHard": map[string]string{"memory.available": "1Mi"},
		// 100% turns image GC off: a shared containerd keeps its images.
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		// Everything the kubelet writes stays under the test's folder.
		"volumePluginDir": filepath.Join(k.RootDir, "volume-plugins"),
		"podLogsDir":      filepath.Join(k.RootDir, "pod-logs"),
		// Capacity changes reach the Node within a second.
		"nodeStatusUpdateFrequency": "1s",
		"nodeStatusReportFrequency": "1m",
		"registerNode":              true,
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding kubelet config: %w", err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("writing kubelet config %s: %w", path, err)
	}
	return nil
}

// nodeKubeconfig returns a kubeconfig for system:node:<name> in group
// system:nodes, bound to the system:node ClusterRole: envtest's apiserver
// authorizes with RBAC only (no Node authorizer), and RBAC binds that role
// to nobody by default.
func (e *Env) nodeKubeconfig(tb testing.TB, name string) string {
	tb.Helper()
	user := "system:node:" + name
	cs, err := kubernetes.NewForConfig(e.AdminConfig())
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "testenv-kubelet-" + name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:node"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(context.Background(), binding, metav1.CreateOptions{}); err != nil {
		tb.Fatalf("testenv: binding %s to system:node: %v", user, err)
	}
	return e.UserKubeconfig(tb, user, "system:nodes")
}

// containerdEndpoint returns the host's containerd when it answers the CRI,
// and otherwise starts a private one for the test.
func containerdEndpoint(tb testing.TB, env *Env) string {
	tb.Helper()
	if err := probeCRI(systemContainerd); err == nil {
		return "unix://" + systemContainerd
	}
	bin, err := exec.LookPath("containerd")
	if err != nil {
		privileged.Missing(tb, "containerd", err)
	}
	dir := shortTempDir(tb, "ctrd")
	sock := filepath.Join(dir, "c.sock")
	config := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(config, []byte(containerdConfig(dir, sock)), 0o600); err != nil {
		tb.Fatalf("testenv: containerd config: %v", err)
	}
	c, err := env.runComponent(tb, "containerd", bin, []string{"--config", config}, 0)
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	var lastErr error
	err = wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		select {
		case <-c.done:
			return false, fmt.Errorf("containerd exited: %v", c.err)
		default:
		}
		lastErr = probeCRI(sock)
		return lastErr == nil, nil
	})
	if err != nil {
		tb.Fatalf("testenv: containerd at %s does not answer the CRI: %v (last: %v)", sock, err, lastErr)
	}
	return "unix://" + sock
}

// containerdConfig keeps every path of a private containerd under dir, with
// the cgroupfs driver and no CNI (so the Node stays NotReady).
func containerdConfig(dir, sock string) string {
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[7]q

[plugins."io.containerd.grpc.v1.cri"]
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[5]q
    conf_dir = %[6]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc",
		filepath.Join(dir, "cni-bin"), filepath.Join(dir, "cni-conf"), filepath.Join(dir, "opt"))
}

// probeCRI calls runtime.v1.RuntimeService/Version on a unix socket. Both
// messages are sent and read as Empty: the request has no required fields,
// and the reply's fields are skipped as unknown.
func probeCRI(sock string) error {
	if _, err := os.Stat(sock); err != nil {
		return fmt.Errorf("CRI socket: %w", err)
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dialling CRI at %s: %w", sock, err)
	}
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := conn.Invoke(ctx, "/runtime.v1.RuntimeService/Version", &emptypb.Empty{}, &emptypb.Empty{}); err != nil {
		return fmt.Errorf("CRI version at %s: %w", sock, err)
	}
	return nil
}

// shortTempDir makes a folder under the system temp folder, whose short path
// keeps unix sockets inside it under the 108-byte limit, and removes it when
// the test ends (after the processes using it, whose cleanups run first).
func shortTempDir(tb testing.TB, prefix string) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	tb.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			tb.Logf("testenv: removing %s: %v", dir, err)
		}
	})
	return dir
}

// shellQuote quotes s as one word for /bin/sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// portTaken reports whether a component's log says it could not bind.
func portTaken(logPath string) bool {
	data, err := os.ReadFile(logPath)
	return err == nil && strings.Contains(string(data), "address already in use")
}

func randomSuffix(tb testing.TB) string {
	tb.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	return hex.EncodeToString(b)
}
