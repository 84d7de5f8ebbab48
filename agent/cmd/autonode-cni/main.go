// Command autonode-cni is the CNI plugin (spec 0.4.0, 1.0.0 and 1.1.0) that
// the container runtime executes for each pod. It stays thin: it forwards the
// verb, the CNI_* variables and the netconf to the autonode agent over the
// unix socket named by the netconf's "agentSocket" (default
// /run/autonode/cni.sock) and prints the agent's answer. The agent does the
// IPAM and the datapath.
//
// When the agent cannot be reached it fails with error 11 (try again later)
// for every verb but STATUS, which fails with 50 (plugin not available). DEL
// too gives 11 then: nothing was released, so the runtime must retry rather
// than forget the pod and leak its address.
package main

import (
	"context"
	"errors"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/autonode/autonode/agent/network/cni/cniwire"
)

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    forward("ADD"),
		Del:    forward("DEL"),
		Check:  forward("CHECK"),
		Status: forward("STATUS"),
		GC:     forward("GC"),
	}, version.PluginSupports("0.4.0", "1.0.0", "1.1.0"), "autonode-cni: forwards CNI requests to the autonode agent")
}

func forward(command string) func(*skel.CmdArgs) error {
	return func(args *skel.CmdArgs) error {
		socket, timeout, terr := cniwire.ParseClientConf(args.StdinData)
		if terr != nil {
			return terr
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		resp, err := cniwire.Call(ctx, socket, cniwire.Request{
			Command: command, ContainerID: args.ContainerID, Netns: args.Netns,
			IfName: args.IfName, Args: args.Args, Path: args.Path, Config: args.StdinData,
		})
		if unreachable := (*cniwire.UnreachableError)(nil); errors.As(err, &unreachable) {
			code := types.ErrTryAgainLater
			if command == "STATUS" {
				code = types.ErrPluginNotAvailable
			}
			return types.NewError(code, "autonode agent unreachable", err.Error())
		}
		if err != nil {
			return types.NewError(types.ErrInternal, "calling the autonode agent", err.Error())
		}
		if resp.Error != nil {
			return resp.Error
		}
		if len(resp.Result) > 0 {
			if _, err := os.Stdout.Write(resp.Result); err != nil {
				return types.NewError(types.ErrIOFailure, "writing result", err.Error())
			}
		}
		return nil
	}
}
