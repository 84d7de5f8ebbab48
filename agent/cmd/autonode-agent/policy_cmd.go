package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/autonode/autonode/agent/config"
	"github.com/autonode/autonode/agent/policy/compute"
	"github.com/autonode/autonode/agent/policy/datapath"
)

// policyCmd is `autonode-agent policy dump|check`: it reads the rules pinned by the policy datapath, so it works
// while the agent is down, and evaluates flows with BPF_PROG_TEST_RUN.
func policyCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	usage := func() {
		fmt.Fprintf(stderr, "Usage:\n  autonode-agent policy dump --pod NAMESPACE/NAME [--pin-root DIR]\n")
		fmt.Fprintf(stderr, "  autonode-agent policy check --from NAMESPACE/NAME|IP --to NAMESPACE/NAME|IP --port PORT/PROTOCOL [--pin-root DIR]\n\n")
		fmt.Fprintf(stderr, "dump prints the rules programmed for a pod on this node; check runs the first packet of a flow through\n")
		fmt.Fprintf(stderr, "the egress program of the source and the ingress program of the destination, for those on this node.\n")
	}
	if len(args) == 0 {
		usage()
		return errors.New("policy: want dump or check")
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usage()
		fmt.Fprintf(stderr, "\nFlags: --pin-root (default %s) for both; dump --pod; check --from, --to, --port.\n", datapath.DefaultPinRoot)
		return config.ErrHelp
	}
	fs := flag.NewFlagSet("autonode-agent policy "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	pinRoot := fs.String("pin-root", datapath.DefaultPinRoot, "The policy datapath's pin `folder` (the agent's policy.pinRoot).")
	switch args[0] {
	case "dump":
		pod := fs.String("pod", "", "The pod, as `namespace/name` (required).")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *pod == "" {
			fs.Usage()
			return errors.New("policy dump: --pod is required")
		}
		return policyDump(ctx, *pinRoot, *pod, stdout)
	case "check":
		from := fs.String("from", "", "Source pod as `namespace/name`, or an IP address (required).")
		to := fs.String("to", "", "Destination pod as `namespace/name`, or an IP address (required).")
		port := fs.String("port", "", "Destination `port/protocol`: 80/TCP, 53/UDP, 9000/SCTP, or ICMP (required).")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *from == "" || *to == "" || *port == "" {
			fs.Usage()
			return errors.New("policy check: --from, --to and --port are required")
		}
		return policyCheck(ctx, *pinRoot, *from, *to, *port, stdout)
	default:
		usage()
		return fmt.Errorf("policy: unknown command %q: want dump or check", args[0])
	}
}

// openPinned opens, read-only, the state an agent pinned: the agent's links and maps are left as they are, whether
// or not it is running.
func openPinned(ctx context.Context, pinRoot string) (*datapath.Datapath, error) {
	ct := filepath.Join(pinRoot, "maps", "ap_ct")
	if _, err := os.Stat(ct); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no policy state is pinned under %s: is network policy enabled on this node?", pinRoot)
	}
	return datapath.Open(ctx, datapath.Config{PinRoot: pinRoot, ReadOnly: true, Logger: slog.New(slog.DiscardHandler)})
}

// findPod looks through this node's interfaces for the one programmed for namespace/name.
func findPod(dp *datapath.Datapath, key string) (datapath.PodRules, error) {
	ns, name, ok := strings.Cut(key, "/")
	if !ok || ns == "" || name == "" {
		return datapath.PodRules{}, fmt.Errorf("pod %q: want namespace/name", key)
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return datapath.PodRules{}, fmt.Errorf("listing interfaces: %w", err)
	}
	for _, i := range ifs {
		r, err := dp.Dump(i.Name)
		if errors.Is(err, datapath.ErrNotFound) {
			continue
		}
		if err != nil {
			return datapath.PodRules{}, err
		}
		if r.Namespace == ns && r.Name == name {
			return r, nil
		}
	}
	return datapath.PodRules{}, fmt.Errorf("pod %s: no rules programmed on this node", key)
}

func policyDump(ctx context.Context, pinRoot, pod string, out io.Writer) error {
	dp, err := openPinned(ctx, pinRoot)
	if err != nil {
		return fmt.Errorf("policy dump: %w", err)
	}
	defer dp.Close()
	r, err := findPod(dp, pod)
	if err != nil {
		return fmt.Errorf("policy dump: %w", err)
	}
	fmt.Fprintf(out, "pod %s/%s on %s, address %s\n", r.Namespace, r.Name, r.HostIf, r.IP)
	for _, d := range []struct {
		name string
		dir  compute.Direction
	}{{"ingress", r.Ingress}, {"egress", r.Egress}} {
		switch {
		case !d.dir.Isolated:
			fmt.Fprintf(out, "%s: not isolated, all allowed\n", d.name)
		case len(d.dir.Entries) == 0:
			fmt.Fprintf(out, "%s: isolated, all denied (node traffic excepted)\n", d.name)
		default:
			fmt.Fprintf(out, "%s: isolated, %d entries allowed (node traffic always):\n", d.name, len(d.dir.Entries))
			for _, e := range d.dir.Entries {
				fmt.Fprintf(out, "  %s\n", e)
			}
		}
	}
	return nil
}

// endpoint is one end of a checked flow: a pod on this node, or only an address.
type endpoint struct {
	addr  netip.Addr
	pod   string // namespace/name, when local
	local string // host interface, when local
}

func resolveEndpoint(dp *datapath.Datapath, s string) (endpoint, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return endpoint{addr: a}, nil
	}
	r, err := findPod(dp, s)
	if err != nil {
		return endpoint{}, fmt.Errorf("%w (give an IP address for a pod on another node)", err)
	}
	return endpoint{addr: r.IP, pod: s, local: r.HostIf}, nil
}

// parsePortProto reads "80/TCP", "53/udp", "SCTP" (port 0) or "ICMP".
func parsePortProto(s string) (compute.Protocol, uint16, error) {
	portStr, protoStr, ok := strings.Cut(s, "/")
	if !ok {
		portStr, protoStr = "", s
	}
	protoStr = strings.ToUpper(protoStr)
	if protoStr == "ICMP" {
		return datapath.ProtocolICMP, 0, nil
	}
	proto, err := compute.ParseProtocol(protoStr)
	if err != nil || protoStr == "" {
		return 0, 0, fmt.Errorf("port %q: protocol must be TCP, UDP, SCTP or ICMP", s)
	}
	p, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || p == 0 {
		return 0, 0, fmt.Errorf("port %q: want a port from 1 to 65535, as in 80/TCP", s)
	}
	return proto, uint16(p), nil
}

func policyCheck(ctx context.Context, pinRoot, fromArg, toArg, portArg string, out io.Writer) error {
	proto, port, err := parsePortProto(portArg)
	if err != nil {
		return fmt.Errorf("policy check: %w", err)
	}
	dp, err := openPinned(ctx, pinRoot)
	if err != nil {
		return fmt.Errorf("policy check: %w", err)
	}
	defer dp.Close()
	from, err := resolveEndpoint(dp, fromArg)
	if err != nil {
		return fmt.Errorf("policy check: --from: %w", err)
	}
	to, err := resolveEndpoint(dp, toArg)
	if err != nil {
		return fmt.Errorf("policy check: --to: %w", err)
	}
	if from.local == "" && to.local == "" {
		return errors.New("policy check: neither end is a pod on this node")
	}
	allowed := true
	if from.local != "" {
		v, err := dp.Check(ctx, from.local, datapath.Egress, datapath.Flow{Peer: to.addr, Protocol: proto, Port: port})
		if err != nil {
			return fmt.Errorf("policy check: egress of %s: %w", from.pod, err)
		}
		fmt.Fprintf(out, "egress of %s to %s: %s\n", from.pod, to.addr, v)
		allowed = allowed && v.Allowed
	}
	if to.local != "" {
		v, err := dp.Check(ctx, to.local, datapath.Ingress, datapath.Flow{Peer: from.addr, Protocol: proto, Port: port})
		if err != nil {
			return fmt.Errorf("policy check: ingress of %s: %w", to.pod, err)
		}
		fmt.Fprintf(out, "ingress of %s from %s: %s\n", to.pod, from.addr, v)
		allowed = allowed && v.Allowed
	}
	verdict := "deny"
	if allowed {
		verdict = "allow"
	}
	_, err = fmt.Fprintf(out, "verdict: %s\n", verdict)
	return err
}
