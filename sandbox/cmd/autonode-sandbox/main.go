// Command autonode-sandbox runs a local sandbox node on emulated AWS: the
// IMDS and EC2 emulators, a real kube-apiserver and etcd, the instance's
// Node, and autonode-agent in the node's own network and mount namespaces.
// It shows the agent's readiness and the Node's state until Ctrl-C, then
// removes everything it created.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/autonode/autonode/agent/kubenode"
	"github.com/autonode/autonode/sandbox/localnode"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "autonode-sandbox:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("autonode-sandbox", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var opts localnode.Options
	fs.StringVar(&opts.AgentBinary, "agent", "bin/autonode-agent", "Path of the autonode-agent binary to run on the sandbox node.")
	fs.StringVar(&opts.AssetsDir, "assets", "", "Folder with kube-apiserver and etcd (make testenv builds them); empty means $KUBEBUILDER_ASSETS.")
	fs.StringVar(&opts.StateDir, "state-dir", ".run", "Folder for the kubeconfigs, the agent config and agent.log.")
	fs.StringVar(&opts.InstanceType, "instance-type", "m5.large", "Instance type of the emulated instance; one of the sandbox catalog's.")
	exitWhenReady := fs.Bool("exit-when-ready", false, "Tear down and exit 0 once the agent is ready, instead of running until Ctrl-C.")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: autonode-sandbox [flags]\n\nRuns a local sandbox node on emulated AWS with autonode-agent on it, and\nshows its status until Ctrl-C. Needs root (network namespaces).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if opts.AssetsDir == "" {
		opts.AssetsDir = os.Getenv("KUBEBUILDER_ASSETS")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	say := func(s string) { fmt.Fprintf(stdout, "[sandbox] %s\n", s) }
	opts.Progress = say
	opts.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	node, err := localnode.Up(ctx, opts)
	if err != nil {
		return err
	}
	defer func() {
		say("tearing down: agent, control plane, emulators, network namespace " + node.NetnsName)
		if err := node.Close(); err != nil {
			fmt.Fprintln(stderr, "autonode-sandbox: cleanup:", err)
		} else {
			say("all removed")
		}
	}()
	say("watching; Ctrl-C to stop")
	return watch(ctx, node, stdout, *exitWhenReady)
}

// watch prints the node's status whenever it changes.
func watch(ctx context.Context, node *localnode.Node, out io.Writer, exitWhenReady bool) error {
	httpc := node.AgentHTTPClient()
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	var last string
	announced := false
	for {
		ready, report := status(ctx, node, httpc)
		if report != last {
			fmt.Fprintf(out, "\n--- %s ---\n%s", time.Now().Format(time.TimeOnly), report)
			last = report
		}
		if ready && !announced {
			fmt.Fprintln(out, "[sandbox] agent ready")
			announced = true
			showPodIdentity(ctx, node, out)
			if exitWhenReady {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-node.AgentExited():
			return fmt.Errorf("the agent exited: %v (see %s)", node.AgentErr(), "agent.log in the state dir")
		case <-ticker.C:
		}
	}
}

// status renders the agent's per-subsystem readiness and the Node's taints,
// annotation and conditions.
func status(ctx context.Context, node *localnode.Node, httpc *http.Client) (ready bool, report string) {
	var b strings.Builder
	b.WriteString("agent subsystems (/readyz?verbose):\n")
	resp, err := httpc.Get(localnode.AgentStatusURL("/readyz") + "?verbose")
	if err != nil {
		b.WriteString("  (agent status server not answering yet)\n")
	} else {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		ready = resp.StatusCode == http.StatusOK
		for line := range strings.Lines(string(body)) {
			b.WriteString("  " + line)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	n, err := node.Client.CoreV1().Nodes().Get(ctx, node.InstanceID, metav1.GetOptions{})
	if err != nil {
		fmt.Fprintf(&b, "node: %v\n", err)
		return ready, b.String()
	}
	fmt.Fprintf(&b, "node %s:\n  agent-version: %s\n", n.Name, orNone(n.Annotations[kubenode.VersionAnnotation]))
	var taints []string
	for _, t := range n.Spec.Taints {
		taints = append(taints, t.Key+":"+string(t.Effect))
	}
	fmt.Fprintf(&b, "  taints: %s\n", orNone(strings.Join(taints, ", ")))
	if len(n.Status.Conditions) == 0 {
		b.WriteString("  conditions: (none reported yet)\n")
	}
	conds := slices.Clone(n.Status.Conditions)
	slices.SortFunc(conds, func(x, y corev1.NodeCondition) int { return strings.Compare(string(x.Type), string(y.Type)) })
	for _, c := range conds {
		fmt.Fprintf(&b, "  %-26s %-6s %s %s\n", c.Type, c.Status, c.Reason, c.Message)
	}
	return ready, b.String()
}

// showPodIdentity asks the agent for a demo pod's credentials, as the pod's
// AWS SDK would, and prints what came back (never the secret).
func showPodIdentity(ctx context.Context, node *localnode.Node, out io.Writer) {
	who := localnode.DemoNamespace + "/" + localnode.DemoServiceAccount
	code, body, err := node.PodCredentials(ctx, localnode.DemoNamespace, localnode.DemoServiceAccount)
	if err != nil || code != http.StatusOK {
		fmt.Fprintf(out, "[sandbox] pod identity for %s: %d %s %v\n", who, code, strings.TrimSpace(string(body)), err)
		return
	}
	var creds struct{ AccessKeyId, Expiration string }
	_ = json.Unmarshal(body, &creds)
	fmt.Fprintf(out, "[sandbox] pod identity: %s got credentials %s (expire %s) from %s\n", who, creds.AccessKeyId, creds.Expiration, localnode.PodIdentityURL)
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
