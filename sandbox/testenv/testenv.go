// Package testenv starts a real kube-apiserver and etcd for a test, through
// controller-runtime's envtest, and optionally kube-scheduler and
// kube-controller-manager against them.
//
// Binaries come from AssetsDir ($KUBEBUILDER_ASSETS, else the cache folder
// that hack/testenv.sh fills); nothing is downloaded. Each Env uses its own
// ports and folders, so packages running in parallel never share a control
// plane, and everything stops when the test ends. Clients other than the
// admin are envtest users, authorised only by the RBAC a test applies, so
// tests exercise exactly the roles shipped in deploy/.
package testenv

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/autonode/autonode/sandbox/privileged"
)

// startTimeout bounds how long one component may take to become ready. It is
// generous because parallel packages share two cores.
const startTimeout = 90 * time.Second

// Options configures Start.
type Options struct {
	// Scheduler also runs kube-scheduler, so pods get bound to Nodes.
	Scheduler bool
	// ControllerManager also runs kube-controller-manager (ReplicaSets,
	// garbage collection, ServiceAccounts, PodDisruptionBudget status). Its
	// node controllers treat Nodes as real: they update fake Nodes, and taint
	// them unreachable once node-monitor-grace-period (about 40s) passes
	// without a kubelet Lease.
	ControllerManager bool
	// CRDDirectoryPaths are installed before Start returns; a missing path
	// is an error.
	CRDDirectoryPaths []string
	// RBACManifests are YAML files (such as deploy/rbac/agent.yaml) applied
	// as admin before Start returns.
	RBACManifests []string
}

// Env is a running control plane. Its methods fail the calling test on error.
type Env struct {
	env   *envtest.Environment
	dir   string // per-test folder: certs, etcd data, kubeconfigs, logs
	admin *rest.Config
}

// component is a control-plane process that envtest does not manage.
type component struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed when the process has exited
	err  error         // exit status, valid once done is closed
}

// AssetsDir returns the folder holding the control-plane binaries:
// $KUBEBUILDER_ASSETS when set, otherwise the cache folder that
// hack/testenv.sh fills. It fails unless kube-apiserver and etcd are there.
func AssetsDir() (string, error) { return privileged.AssetsDir() }

// Start runs etcd and kube-apiserver (plus what opts asks for), installs CRDs
// and applies RBAC, and stops everything when the test ends. It skips the
// test when the binaries are missing (fails with CI=true).
func Start(tb testing.TB, opts Options) *Env {
	tb.Helper()
	privileged.Require(tb, privileged.APIServer)
	assets, err := AssetsDir()
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	for _, c := range []struct {
		want bool
		bin  string
	}{{opts.Scheduler, "kube-scheduler"}, {opts.ControllerManager, "kube-controller-manager"}} {
		if _, err := os.Stat(filepath.Join(assets, c.bin)); c.want && err != nil {
			privileged.Missing(tb, c.bin, err)
		}
	}

	// Registered before anything starts, so it runs after every later
	// cleanup: the folder outlives the processes writing into it.
	dir := tb.TempDir()
	e := &Env{dir: dir}

	apiserverLog, err := os.Create(filepath.Join(dir, "kube-apiserver.log"))
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	etcdLog, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	certDir := filepath.Join(dir, "apiserver")
	etcdDir := filepath.Join(dir, "etcd")
	for _, d := range []string{certDir, etcdDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			tb.Fatalf("testenv: %v", err)
		}
	}
	// A fixed CertDir keeps serving certificates and the client CA across
	// RestartAPIServer; envtest regenerates both for a temporary one.
	apiserver := &envtest.APIServer{CertDir: certDir, Out: apiserverLog, Err: apiserverLog}
	// Loopback only: no Endpoints reconciliation against a real address.
	apiserver.Configure().Set("endpoint-reconciler-type", "none")
	// Graceful shutdown waits up to the request timeout (60s by default) for
	// open watches; 10s keeps a restart under a component's watch short.
	apiserver.Configure().Set("request-timeout", "10s")
	etcd := &envtest.Etcd{DataDir: etcdDir, Out: etcdLog, Err: etcdLog}
	etcd.Configure().Set("unsafe-no-fsync", "true") // test data need no durability

	e.env = &envtest.Environment{
		BinaryAssetsDirectory:    assets,
		ControlPlane:             envtest.ControlPlane{APIServer: apiserver, Etcd: etcd},
		CRDDirectoryPaths:        opts.CRDDirectoryPaths,
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: startTimeout,
		ControlPlaneStopTimeout:  startTimeout,
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			logTail(tb, "kube-apiserver", apiserverLog.Name())
			logTail(tb, "etcd", etcdLog.Name())
		}
		if err := e.env.Stop(); err != nil {
			tb.Errorf("testenv: stopping control plane: %v", err)
		}
		apiserverLog.Close()
		etcdLog.Close()
	})
	cfg, err := e.env.Start()
	if err != nil {
		tb.Fatalf("testenv: starting control plane from %s: %v", assets, err)
	}
	e.admin = cfg

	if len(opts.RBACManifests) > 0 {
		e.Apply(tb, opts.RBACManifests...)
	}
	if opts.Scheduler || opts.ControllerManager {
		kubeconfig := filepath.Join(dir, "admin.kubeconfig")
		if err := os.WriteFile(kubeconfig, e.env.KubeConfig, 0o600); err != nil {
			tb.Fatalf("testenv: writing %s: %v", kubeconfig, err)
		}
		if opts.Scheduler {
			e.startComponent(tb, filepath.Join(assets, "kube-scheduler"), kubeconfig)
		}
		if opts.ControllerManager {
			e.startComponent(tb, filepath.Join(assets, "kube-controller-manager"), kubeconfig)
			e.waitForControllers(tb)
		}
	}
	return e
}

// AdminConfig returns a config for a system:masters user. Each call returns
// a copy the caller may change.
func (e *Env) AdminConfig() *rest.Config { return rest.CopyConfig(e.admin) }

// Host returns the apiserver's URL; it stays the same across restarts.
func (e *Env) Host() string { return e.admin.Host }

// UserConfig returns a config for a user authenticated by a client
// certificate with the given name and groups and no rights beyond what
// applied RBAC grants it.
func (e *Env) UserConfig(tb testing.TB, name string, groups ...string) *rest.Config {
	tb.Helper()
	user, err := e.env.AddUser(envtest.User{Name: name, Groups: groups}, &rest.Config{QPS: 1000, Burst: 2000})
	if err != nil {
		tb.Fatalf("testenv: adding user %s: %v", name, err)
	}
	return rest.CopyConfig(user.Config())
}

// UserKubeconfig is UserConfig written as a kubeconfig file, for components
// that run as their own processes.
func (e *Env) UserKubeconfig(tb testing.TB, name string, groups ...string) string {
	tb.Helper()
	user, err := e.env.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	if err != nil {
		tb.Fatalf("testenv: adding user %s: %v", name, err)
	}
	data, err := user.KubeConfig()
	if err != nil {
		tb.Fatalf("testenv: kubeconfig of %s: %v", name, err)
	}
	path := filepath.Join(tb.TempDir(), name+".kubeconfig")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	return path
}

// StopAPIServer stops kube-apiserver, leaving etcd and the other components
// running, as in a control-plane upgrade.
func (e *Env) StopAPIServer(tb testing.TB) {
	tb.Helper()
	if err := e.env.ControlPlane.APIServer.Stop(); err != nil {
		tb.Fatalf("testenv: stopping kube-apiserver: %v", err)
	}
}

// StartAPIServer starts kube-apiserver again after StopAPIServer, on the same
// address with the same certificates, so existing clients reconnect.
func (e *Env) StartAPIServer(tb testing.TB) {
	tb.Helper()
	if err := e.env.ControlPlane.APIServer.Start(); err != nil {
		tb.Fatalf("testenv: restarting kube-apiserver on %s: %v", e.admin.Host, err)
	}
}

// RestartAPIServer stops kube-apiserver and starts it again on the same
// address; it returns once the new one is healthy.
func (e *Env) RestartAPIServer(tb testing.TB) {
	tb.Helper()
	e.StopAPIServer(tb)
	e.StartAPIServer(tb)
}

// Apply server-side applies, as admin, every object in the given
// multi-document YAML (or JSON) files, in order. Namespaced objects without a
// namespace go to "default".
func (e *Env) Apply(tb testing.TB, paths ...string) {
	tb.Helper()
	c, err := client.New(e.AdminConfig(), client.Options{})
	if err != nil {
		tb.Fatalf("testenv: apply client: %v", err)
	}
	ctx := context.Background()
	for _, path := range paths {
		objs, err := readManifests(path)
		if err != nil {
			tb.Fatalf("testenv: %v", err)
		}
		for _, obj := range objs {
			if err := applyOne(ctx, c, obj); err != nil {
				tb.Fatalf("testenv: applying %s %s from %s: %v", obj.GetKind(), obj.GetName(), path, err)
			}
		}
	}
}

func applyOne(ctx context.Context, c client.Client, obj *unstructured.Unstructured) error {
	gvk := obj.GroupVersionKind()
	mapping, err := c.RESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return fmt.Errorf("mapping %s: %w", gvk, err)
	}
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace && obj.GetNamespace() == "" {
		obj.SetNamespace(metav1.NamespaceDefault)
	}
	return c.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj),
		client.FieldOwner("autonode-testenv"), client.ForceOwnership)
}

// readManifests decodes every non-empty document of a YAML or JSON file.
func readManifests(path string) ([]*unstructured.Unstructured, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading manifest: %w", err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for i := 0; ; i++ {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return objs, nil
		} else if err != nil {
			return nil, fmt.Errorf("manifest %s, document %d: %w", path, i+1, err)
		}
		if len(m) == 0 {
			continue // comments only, or "---" at the end
		}
		u := &unstructured.Unstructured{Object: m}
		if u.GetKind() == "" || u.GetAPIVersion() == "" {
			return nil, fmt.Errorf("manifest %s, document %d: no kind or apiVersion", path, i+1)
		}
		objs = append(objs, u)
	}
}

// startComponent runs a kube-scheduler or kube-controller-manager with the
// admin kubeconfig on a free loopback port, and waits for its /healthz (for
// the scheduler /readyz, which also waits for its informers). Leader
// election is off: each Env has exactly one of each.
func (e *Env) startComponent(tb testing.TB, bin, kubeconfig string) {
	tb.Helper()
	name := filepath.Base(bin)
	// A port taken between freePort and the bind makes the process exit;
	// then try another, rather than fail the test.
	var lastErr error
	for attempt := range 3 {
		port, err := freePort()
		if err != nil {
			tb.Fatalf("testenv: %s: %v", name, err)
		}
		certDir := filepath.Join(e.dir, fmt.Sprintf("%s-certs-%d", name, attempt))
		args := []string{
			"--kubeconfig=" + kubeconfig,
			"--leader-elect=false",
			"--bind-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(port),
			"--cert-dir=" + certDir,
		}
		path := "/healthz"
		if name == "kube-scheduler" {
			path = "/readyz"
		}
		c, err := e.runComponent(tb, name, bin, args, attempt)
		if err != nil {
			tb.Fatalf("testenv: %v", err)
		}
		lastErr = waitHealthy(c, fmt.Sprintf("https://127.0.0.1:%d%s", port, path))
		if lastErr == nil {
			return
		}
		select {
		case <-c.done: // exited: maybe the port; try again
			continue
		default:
			logTail(tb, name, c.log)
			tb.Fatalf("testenv: %s: %v", name, lastErr)
		}
	}
	tb.Fatalf("testenv: %s did not start: %v", name, lastErr)
}

// runComponent starts one process, logging to a file, and stops it in
// cleanup: SIGTERM, then SIGKILL if it lingers.
func (e *Env) runComponent(tb testing.TB, name, bin string, args []string, attempt int) (*component, error) {
	tb.Helper()
	logPath := filepath.Join(e.dir, fmt.Sprintf("%s-%d.log", name, attempt))
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("%s log: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group, so a ^C to go test does not race our cleanup.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	c := &component{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		logFile.Close()
		close(c.done)
	}()
	tb.Cleanup(func() {
		if tb.Failed() {
			logTail(tb, name, logPath)
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-c.done
		}
	})
	return c, nil
}

// waitHealthy polls url until it answers 200, the process exits, or
// startTimeout passes. The components serve a self-signed certificate, and
// their health paths need no credentials.
func waitHealthy(c *component, url string) error {
	hc := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
	}
	defer hc.CloseIdleConnections()
	deadline := time.After(startTimeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if resp, err := hc.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-c.done:
			return fmt.Errorf("%s exited before %s answered: %v", c.name, url, c.err)
		case <-deadline:
			return fmt.Errorf("%s: %s not healthy after %s", c.name, url, startTimeout)
		case <-tick.C:
		}
	}
}

// waitForControllers proves the controller-manager's controllers run: its
// serviceaccount controller gives a new namespace a "default" ServiceAccount.
func (e *Env) waitForControllers(tb testing.TB) {
	tb.Helper()
	cs, err := kubernetes.NewForConfig(e.AdminConfig())
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	ns, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "testenv-kcm-probe-"},
	}, metav1.CreateOptions{})
	if err != nil {
		tb.Fatalf("testenv: creating probe namespace: %v", err)
	}
	err = wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(ns.Name).Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		tb.Fatalf("testenv: kube-controller-manager did not create the default ServiceAccount in %s: %v", ns.Name, err)
	}
	// Deleting it also exercises the namespace controller, but nobody waits.
	_ = cs.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{})
}

// freePort asks the kernel for an unused loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// logTail logs the end of a component's log, which is where the reason for a
// failure usually is.
func logTail(tb testing.TB, name, path string) {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Logf("testenv: %s log %s: %v", name, path, err)
		return
	}
	const max = 4096
	if len(data) > max {
		data = data[len(data)-max:]
	}
	tb.Logf("testenv: last of %s log %s:\n%s", name, path, data)
}
