// Package localnode stands up a sandbox node on this machine: an emulated
// VPC with one instance in it, the IMDS and EC2 emulators, a real
// kube-apiserver and etcd, the instance's Node object, and a network
// namespace (with its own mount namespace) where the agent runs, so that
// link-local addresses, routes, BPF programs and mounts never touch the
// host. The one exception is the node's BPF filesystem, mounted from the host
// under the state dir so that pinned NetworkPolicy programs outlive a killed
// agent. Close removes all of it.
//
// Inside the node's namespace the agent sees what it would on EC2: IMDS on
// 169.254.169.254:80, and the apiserver and EC2 on loopback ports that this
// process forwards to the host's.
package localnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/autonode/autonode/agent/kubenode"
	"github.com/autonode/autonode/deploy"
	"github.com/autonode/autonode/sandbox/bpffs"
	"github.com/autonode/autonode/sandbox/catalog"
	"github.com/autonode/autonode/sandbox/ec2"
	"github.com/autonode/autonode/sandbox/eksauth"
	"github.com/autonode/autonode/sandbox/imds"
	"github.com/autonode/autonode/sandbox/netnsutil"
	"github.com/autonode/autonode/sandbox/vpc"
)

// The agent's identity in the cluster, bound by deploy/rbac/agent.yaml.
const (
	AgentUser  = "autonode-agent"
	AgentGroup = "autonode:agents"
	// imdsAddr is where the agent finds IMDS, as on EC2.
	imdsAddr = "169.254.169.254"
	// AgentStatusAddr is the agent's status server inside the node netns.
	AgentStatusAddr = "127.0.0.1:61680"
	// ClusterName is the sandbox cluster's name, for Pod Identity.
	ClusterName = "sandbox"
	// The service account associated with a role in the EKS Auth emulator.
	DemoNamespace      = "default"
	DemoServiceAccount = "demo"
	DemoRoleARN        = "arn:aws:iam::111122223333:role/sandbox-demo"
	// PodIdentityURL is where pods get credentials, as the EKS webhook
	// tells their SDKs.
	PodIdentityURL = "http://169.254.170.23/v1/credentials"
)

// Options configures Up.
type Options struct {
	// AgentBinary is the autonode-agent to run.
	AgentBinary string
	// AssetsDir holds kube-apiserver and etcd (hack/testenv.sh builds them).
	AssetsDir string
	// StateDir receives the kubeconfigs, the agent config and agent.log.
	StateDir string
	// InstanceType of the emulated instance. Default m5.large.
	InstanceType string
	// Progress receives one line per step.
	Progress func(string)
	// Logger receives the emulators' errors.
	Logger *slog.Logger
}

// Node is a running sandbox node.
type Node struct {
	opts       Options
	InstanceID string
	ProviderID string
	NetnsName  string
	// AdminKubeconfig is a kubeconfig path with cluster-admin rights.
	AdminKubeconfig string
	// EC2Endpoint is the EC2 emulator's URL on the host.
	EC2Endpoint string

	Model   *vpc.Model
	EC2     *ec2.Server
	EKSAuth *eksauth.Server
	// Issuer signs service-account tokens that the EKS Auth emulator accepts.
	Issuer *eksauth.Issuer
	Client kubernetes.Interface

	ns        netns.NsHandle
	vpc       netns.NsHandle
	vpcName   string
	env       *envtest.Environment
	listeners []net.Listener
	servers   []*http.Server
	agent     *exec.Cmd
	agentDone chan struct{}
	agentErr  error
	agentLog  *os.File
	// agentConfig is the agent's config file, kept for restarts.
	agentConfig string
	wg          sync.WaitGroup
}

// Up builds the sandbox node step by step, reporting each step. On error it
// removes what it had built.
func Up(ctx context.Context, opts Options) (_ *Node, err error) {
	if opts.InstanceType == "" {
		opts.InstanceType = "m5.large"
	}
	if opts.Progress == nil {
		opts.Progress = func(string) {}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("the sandbox node needs root: it creates a network namespace")
	}
	if _, ok := catalog.Lookup(opts.InstanceType); !ok {
		return nil, fmt.Errorf("instance type %q is not in the sandbox catalog", opts.InstanceType)
	}
	for _, bin := range []string{opts.AgentBinary, filepath.Join(opts.AssetsDir, "kube-apiserver"), filepath.Join(opts.AssetsDir, "etcd")} {
		if _, err := os.Stat(bin); err != nil {
			return nil, fmt.Errorf("%w (run make build testenv)", err)
		}
	}
	if err := os.MkdirAll(opts.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	if err := removeStale(opts.StateDir, opts.Progress); err != nil {
		return nil, err
	}
	n := &Node{opts: opts, ns: netns.None(), vpc: netns.None()}
	defer func() {
		if err != nil {
			err = errors.Join(err, n.Close())
		}
	}()
	step := opts.Progress

	// The node's BPF filesystem, mounted here in the host's mount namespace: `ip netns exec` remounts /sys for the
	// agent, so a bpffs it mounted at /sys/fs/bpf would die with it, and with it the pins that keep NetworkPolicy
	// enforced while the agent is down. This one outlives the agent, as /sys/fs/bpf does on a real node.
	if err := bpffs.Ensure(n.bpffsDir()); err != nil {
		return n, err
	}
	step("mounted the node's BPF filesystem at " + n.bpffsDir() + " (NetworkPolicy pins outlive the agent)")

	// The VPC and the instance.
	n.Model, err = vpc.New(vpc.Config{})
	if err != nil {
		return n, fmt.Errorf("vpc model: %w", err)
	}
	subnet := n.Model.Subnets()[0]
	inst, err := n.Model.LaunchInstance(opts.InstanceType, subnet.ID, map[string]string{"Name": "autonode-sandbox"})
	if err != nil {
		return n, fmt.Errorf("launching instance: %w", err)
	}
	n.InstanceID = inst.ID
	n.ProviderID = "aws:///" + inst.Zone.Name + "/" + inst.ID
	step(fmt.Sprintf("launched %s %s in %s (%s), private IP %s", opts.InstanceType, inst.ID, subnet.ID, inst.Zone.Name, inst.PrivateIP))

	// The node's network namespace.
	// The model's ids repeat from run to run; the suffix keeps two sandboxes
	// (say, parallel tests) apart.
	n.NetnsName = fmt.Sprintf("autonode-%s-%04x", inst.ID, rand.Uint32()&0xffff)
	// Recorded first, so that a sandbox killed outright is cleaned up by the
	// next one.
	if err := os.WriteFile(filepath.Join(opts.StateDir, staleNetnsFile), []byte(n.NetnsName), 0o644); err != nil {
		return n, fmt.Errorf("recording netns: %w", err)
	}
	n.ns, err = netnsutil.NewNamed(n.NetnsName)
	if err != nil {
		return n, err
	}
	if err := setUpLoopback(n.ns, imdsAddr+"/32"); err != nil {
		return n, err
	}
	n.vpcName = n.NetnsName + "-vpc"
	if n.vpc, err = netnsutil.NewNamed(n.vpcName); err != nil {
		return n, err
	}
	primary, err := n.Model.ENI(inst.ENIIDs[0])
	if err != nil {
		return n, fmt.Errorf("primary ENI: %w", err)
	}
	if err := primaryENI(n.ns, n.vpc, primary.MAC, inst.PrivateIP, subnet.CIDR); err != nil {
		return n, err
	}
	step(fmt.Sprintf("created network namespace %s with the primary ENI %s (%s, %s) as eth0; the VPC router in %s",
		n.NetnsName, primary.ID, primary.MAC, inst.PrivateIP, n.vpcName))

	// IMDS inside the namespace, where the agent's SDK looks by default.
	imdsLn, err := listenIn(n.ns, net.JoinHostPort(imdsAddr, "80"))
	if err != nil {
		return n, err
	}
	// The node role's credentials are the ones the EKS Auth emulator checks
	// signatures against.
	nodeCreds := credentials.NewStaticCredentialsProvider(eksauth.TestAccessKeyID, eksauth.TestSecretAccessKey, "")
	n.serve(imdsLn, imds.New(n.Model, inst.ID, imds.Options{Logger: opts.Logger, RoleName: "autonode-sandbox-node", Credentials: nodeCreds}))
	step("IMDSv2 emulator on " + imdsAddr + ":80 in the node namespace")

	// EC2 on the host, forwarded into the namespace on the same port.
	n.EC2, err = ec2.New(ec2.Options{Model: n.Model, Logger: opts.Logger})
	if err != nil {
		return n, fmt.Errorf("ec2 emulator: %w", err)
	}
	ec2Ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return n, fmt.Errorf("ec2 emulator: %w", err)
	}
	n.serve(ec2Ln, n.EC2)
	n.EC2Endpoint = "http://" + ec2Ln.Addr().String()
	if err := n.forward(ec2Ln.Addr().String()); err != nil {
		return n, err
	}
	step("EC2 emulator on " + n.EC2Endpoint + " (host and node namespace)")

	// EKS Auth, for the agent's Pod Identity endpoint.
	if n.Issuer, err = eksauth.NewIssuer("https://oidc.sandbox.autonode.dev"); err != nil {
		return n, fmt.Errorf("token issuer: %w", err)
	}
	n.EKSAuth, err = eksauth.New(eksauth.Options{ClusterName: ClusterName, Region: n.Model.Region(), Issuer: n.Issuer, Logger: opts.Logger})
	if err != nil {
		return n, fmt.Errorf("eks auth emulator: %w", err)
	}
	n.EKSAuth.Associate(DemoNamespace, DemoServiceAccount, DemoRoleARN)
	authLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return n, fmt.Errorf("eks auth emulator: %w", err)
	}
	n.serve(authLn, n.EKSAuth)
	eksAuthEndpoint := "http://" + authLn.Addr().String()
	if err := n.forward(authLn.Addr().String()); err != nil {
		return n, err
	}
	step("EKS Auth emulator on " + eksAuthEndpoint + "; " + DemoNamespace + "/" + DemoServiceAccount + " may assume " + DemoRoleARN)

	// The control plane.
	step("starting etcd and kube-apiserver v1.37.2")
	n.env = &envtest.Environment{BinaryAssetsDirectory: opts.AssetsDir}
	n.env.ControlPlane.GetAPIServer().Configure().Set("endpoint-reconciler-type", "none")
	n.env.ControlPlane.Etcd = &envtest.Etcd{}
	n.env.ControlPlane.Etcd.Configure().Append("unsafe-no-fsync", "true")
	admin, err := n.env.Start()
	if err != nil {
		return n, fmt.Errorf("starting the control plane: %w", err)
	}
	apiHost := n.env.ControlPlane.APIServer.SecureServing.ListenAddr.HostPort()
	if err := n.forward(apiHost); err != nil {
		return n, err
	}
	step("kube-apiserver on https://" + apiHost + " (host and node namespace)")

	if err := apply(ctx, admin, deploy.CRDs()); err != nil {
		return n, err
	}
	if err := apply(ctx, admin, deploy.RBAC()); err != nil {
		return n, err
	}
	n.Client, err = kubernetes.NewForConfig(admin)
	if err != nil {
		return n, fmt.Errorf("admin client: %w", err)
	}
	adminUser, err := n.env.AddUser(envtest.User{Name: "sandbox-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return n, fmt.Errorf("admin user: %w", err)
	}
	n.AdminKubeconfig = filepath.Join(opts.StateDir, "admin.kubeconfig")
	if err := writeKubeconfig(adminUser, n.AdminKubeconfig); err != nil {
		return n, err
	}
	agentUser, err := n.env.AddUser(envtest.User{Name: AgentUser, Groups: []string{AgentGroup}}, nil)
	if err != nil {
		return n, fmt.Errorf("agent user: %w", err)
	}
	agentKubeconfig := filepath.Join(opts.StateDir, "agent.kubeconfig")
	if err := writeKubeconfig(agentUser, agentKubeconfig); err != nil {
		return n, err
	}
	step("applied deploy/rbac; agent user " + AgentUser + " (group " + AgentGroup + "); kubectl: KUBECONFIG=" + n.AdminKubeconfig)

	if err := n.createNode(ctx, inst); err != nil {
		return n, err
	}
	step("created Node " + inst.ID + " with providerID " + n.ProviderID + " and taint " + kubenode.StartupTaintKey)

	agentConfig := filepath.Join(opts.StateDir, "agent.yaml")
	// The agent's state and serial console stay in the sandbox's folder; the
	// device plugins find no hardware here, so write no sockets.
	cfg := fmt.Sprintf("# Written by autonode-sandbox.\nlog:\n  format: text\nhttp:\n  address: %s\nkubernetes:\n  kubeconfig: %s\n"+
		"podIdentity:\n  clusterName: %s\n  eksAuthEndpoint: %s\nstateDir: %s\nhealth:\n  consolePath: %s\n"+
		// A few warm addresses on the primary ENI: secondary ENIs exist only
		// in the emulator, with no link in the node's namespace.
		"network:\n  ec2Endpoint: %s\n  cniSocket: %s\n  warmIPTarget: 3\n  minimumIPTarget: 3\nshutdownTimeout: 20s\n"+
		// No kubelet runs here to register the CSI node service, and the
		// sandbox has no EBS volumes for it to stage.
		"storage:\n  csi:\n    enabled: false\n"+
		"policy:\n  pinRoot: %s\n",
		AgentStatusAddr, agentKubeconfig, ClusterName, eksAuthEndpoint,
		filepath.Join(opts.StateDir, "agent-state"), filepath.Join(opts.StateDir, "console.log"),
		n.EC2Endpoint, n.CNISocket(), n.PolicyPinRoot())
	if err := os.WriteFile(agentConfig, []byte(cfg), 0o644); err != nil {
		return n, fmt.Errorf("agent config: %w", err)
	}
	if err := n.startAgent(agentConfig); err != nil {
		return n, err
	}
	step(fmt.Sprintf("started autonode-agent (pid %d) in %s; logs: %s", n.agent.Process.Pid, n.NetnsName, n.agentLog.Name()))
	return n, nil
}

func (n *Node) serve(ln net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	n.listeners = append(n.listeners, ln)
	n.servers = append(n.servers, srv)
	n.wg.Go(func() { _ = srv.Serve(ln) })
}

// forward listens on hostPort inside the node namespace and relays each
// connection to the same address on the host.
func (n *Node) forward(hostPort string) error {
	ln, err := listenIn(n.ns, hostPort)
	if err != nil {
		return err
	}
	n.listeners = append(n.listeners, ln)
	n.wg.Go(func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			go relay(in, hostPort)
		}
	})
	return nil
}

func relay(in net.Conn, target string) {
	defer in.Close()
	out, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		return
	}
	defer out.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(out, in); done <- struct{}{} }()
	go func() { _, _ = io.Copy(in, out); done <- struct{}{} }()
	<-done
}

// apply creates every object in the YAML files of dir as the admin: the
// CRDs and RBAC the project ships.
func apply(ctx context.Context, cfg *rest.Config, dir fs.FS) error {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("applying deploy/: %w", err)
	}
	decode := serializer.NewCodecFactory(scheme).UniversalDeserializer().Decode
	files, err := fs.Glob(dir, "*.yaml")
	if err != nil {
		return fmt.Errorf("deploy/: %w", err)
	}
	for _, f := range files {
		data, err := fs.ReadFile(dir, f)
		if err != nil {
			return fmt.Errorf("deploy/%s: %w", f, err)
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			var raw runtime.RawExtension
			if err := dec.Decode(&raw); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return fmt.Errorf("deploy/%s: %w", f, err)
			}
			if len(raw.Raw) == 0 {
				continue
			}
			obj, _, err := decode(raw.Raw, nil, nil)
			if err != nil {
				return fmt.Errorf("deploy/%s: %w", f, err)
			}
			if err := c.Create(ctx, obj.(client.Object)); err != nil {
				return fmt.Errorf("deploy/%s: creating %T: %w", f, obj, err)
			}
		}
	}
	return nil
}

func writeKubeconfig(u *envtest.AuthenticatedUser, path string) error {
	data, err := u.KubeConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	return os.WriteFile(path, data, 0o600)
}

// createNode registers the Node as the kubelet would, with the labels and
// startup taint a NodePool gives it.
func (n *Node) createNode(ctx context.Context, inst vpc.Instance) error {
	it, _ := catalog.Lookup(inst.Type)
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: inst.ID,
			Labels: map[string]string{
				"kubernetes.io/hostname":           inst.ID,
				"kubernetes.io/os":                 "linux",
				"kubernetes.io/arch":               it.Arch,
				"node.kubernetes.io/instance-type": inst.Type,
				"topology.kubernetes.io/zone":      inst.Zone.Name,
				"topology.kubernetes.io/region":    n.Model.Region(),
				"autonode.dev/capacity-type":       "on-demand",
				"autonode.dev/nodepool":            "sandbox",
			},
		},
		Spec: corev1.NodeSpec{
			ProviderID: n.ProviderID,
			Taints:     []corev1.Taint{{Key: kubenode.StartupTaintKey, Effect: corev1.TaintEffectNoSchedule}},
		},
	}
	if _, err := n.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating node %s: %w", inst.ID, err)
	}
	return nil
}

// startAgent runs the agent in the node's network namespace. `ip netns exec`
// also gives it a private mount namespace, so its mounts stay there.
func (n *Node) startAgent(configPath string) error {
	logPath := filepath.Join(n.opts.StateDir, "agent.log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("agent log: %w", err)
	}
	n.agentLog = f
	n.agentConfig = configPath
	cmd := exec.Command("ip", "netns", "exec", n.NetnsName, n.opts.AgentBinary, "--config", configPath)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET=", "WATCHDOG_USEC=")
	// Its own process group, so that a Ctrl-C reaches the sandbox, which
	// then stops the agent in order.
	// Pdeathsig stops it should the sandbox itself be killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting agent %s: %w", n.opts.AgentBinary, err)
	}
	n.agent = cmd
	n.agentDone = make(chan struct{})
	go func() {
		n.agentErr = cmd.Wait()
		close(n.agentDone)
	}()
	return nil
}

// staleNetnsFile in the state dir names the namespace of a running sandbox.
const staleNetnsFile = "netns"

// bpffsDir in the state dir is where the node's BPF filesystem is mounted.
const bpffsDir = "bpffs"

// unmountBPFFS unmounts the node's BPF filesystem at dir, if one is mounted there, and removes the folder.
func unmountBPFFS(dir string) error {
	mounted, err := bpffs.IsMounted(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if mounted {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmounting the node's bpffs %s: %w", dir, err)
		}
	}
	return os.Remove(dir)
}

// removeStale deletes the namespace that a sandbox killed before its Close
// left behind.
func removeStale(stateDir string, step func(string)) error {
	if err := unmountBPFFS(filepath.Join(stateDir, bpffsDir)); err != nil {
		return err
	}
	data, err := os.ReadFile(filepath.Join(stateDir, staleNetnsFile))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	name := strings.TrimSpace(string(data))
	if !strings.HasPrefix(name, "autonode-i-") || strings.ContainsAny(name, "/.") {
		return fmt.Errorf("%s/%s names %q, which is not a sandbox namespace; remove the file", stateDir, staleNetnsFile, name)
	}
	for _, ns := range []string{name, name + "-vpc"} {
		if err := netnsutil.DeleteNamed(ns); err != nil {
			return err
		}
	}
	step("removed network namespace " + name + " left by an earlier sandbox")
	return os.Remove(filepath.Join(stateDir, staleNetnsFile))
}

// KillAgent kills the agent with SIGKILL, as a crash would, and waits for it.
func (n *Node) KillAgent() {
	_ = n.agent.Process.Kill()
	<-n.agentDone
	n.agentLog.Close()
}

// RestartAgent starts the agent again with the same configuration, after
// KillAgent or its own exit.
func (n *Node) RestartAgent() error {
	select {
	case <-n.agentDone:
	default:
		return errors.New("the agent is still running")
	}
	return n.startAgent(n.agentConfig)
}

// AgentExited is closed when the agent process ends.
func (n *Node) AgentExited() <-chan struct{} { return n.agentDone }

// AgentErr is the agent's exit status once AgentExited is closed.
func (n *Node) AgentErr() error { return n.agentErr }

// AgentHTTPClient talks to the agent's status server inside the namespace.
func (n *Node) AgentHTTPClient() *http.Client {
	return &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			err := netnsutil.Do(n.ns, func() error {
				var err error
				conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		}},
	}
}

// PolicyPinRoot is where the agent pins its NetworkPolicy maps and links, in the node's BPF filesystem, which
// this process sees too.
func (n *Node) PolicyPinRoot() string { return filepath.Join(n.bpffsDir(), "autonode", "policy") }

func (n *Node) bpffsDir() string { return filepath.Join(n.opts.StateDir, bpffsDir) }

// CNISocket is where the agent serves CNI requests; autonode-cni reaches it
// from any namespace, since it is a path.
func (n *Node) CNISocket() string { return filepath.Join(n.opts.StateDir, "cni.sock") }

// PodCredentials asks the agent's Pod Identity endpoint, from inside the
// node's namespace, for the credentials of namespace/serviceAccount, as a
// pod's AWS SDK would with its projected token.
func (n *Node) PodCredentials(ctx context.Context, namespace, serviceAccount string) (int, []byte, error) {
	token, err := n.Issuer.Mint(eksauth.Token{Namespace: namespace, ServiceAccount: serviceAccount})
	if err != nil {
		return 0, nil, fmt.Errorf("minting a token for %s/%s: %w", namespace, serviceAccount, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, PodIdentityURL, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", token)
	resp, err := n.AgentHTTPClient().Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("GET %s: %w", PodIdentityURL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, body, err
}

// AgentStatusURL is the agent's status server as AgentHTTPClient reaches it.
func AgentStatusURL(path string) string {
	return (&url.URL{Scheme: "http", Host: AgentStatusAddr, Path: path}).String()
}

// Close stops the agent (SIGTERM, then SIGKILL after 30s), the control plane
// and the emulators, and removes the namespace and the state files other
// than agent.log.
func (n *Node) Close() error {
	var errs []error
	if n.agent != nil && n.agent.Process != nil {
		_ = n.agent.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.agentDone:
		case <-time.After(30 * time.Second):
			_ = n.agent.Process.Kill()
			<-n.agentDone
			errs = append(errs, fmt.Errorf("agent pid %d ignored SIGTERM for 30s; killed", n.agent.Process.Pid))
		}
		n.agent = nil
	}
	if n.agentLog != nil {
		n.agentLog.Close()
	}
	for _, srv := range n.servers {
		_ = srv.Close()
	}
	for _, ln := range n.listeners {
		_ = ln.Close()
	}
	n.wg.Wait()
	if n.env != nil {
		if err := n.env.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stopping the control plane: %w", err))
		}
		n.env = nil
	}
	if n.NetnsName != "" {
		if n.ns.IsOpen() {
			n.ns.Close()
		}
		if n.vpc.IsOpen() {
			n.vpc.Close()
		}
		if err := netnsutil.DeleteNamed(n.vpcName); n.vpcName != "" && err != nil {
			errs = append(errs, err)
		}
		if err := netnsutil.DeleteNamed(n.NetnsName); err != nil {
			errs = append(errs, err)
		}
	}
	// Unmounting drops every pin; with the namespace gone no program is attached any more.
	if err := unmountBPFFS(n.bpffsDir()); err != nil {
		errs = append(errs, err)
	}
	// The agent's state belongs to this instance; the next sandbox starts
	// afresh (the emulated instance ids repeat from run to run).
	if err := os.RemoveAll(filepath.Join(n.opts.StateDir, "agent-state")); err != nil {
		errs = append(errs, err)
	}
	for _, f := range []string{"admin.kubeconfig", "agent.kubeconfig", "agent.yaml", "console.log", staleNetnsFile} {
		if err := os.Remove(filepath.Join(n.opts.StateDir, f)); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
