// Package cniwire is the protocol between the autonode-cni binary and the
// agent: one JSON request per HTTP/1.1 POST to /v1/cni on a unix socket, one
// JSON response back. It is kept free of netlink and IPAM imports so that the
// binary the runtime executes for every pod stays small and starts fast.
//
// Request:  {"command":"ADD","containerID":"…","netns":"…","ifName":"eth0",
//
//	"args":"K8S_POD_NAME=…;…","path":"/opt/cni/bin","config":{…stdin…}}
//
// Response: {"result":{…CNI result in the config's cniVersion…}} or
//
//	{"error":{"code":7,"msg":"…","details":"…"}}, always with status 200
//	when the agent understood the request; any other status is a protocol
//	failure.
package cniwire

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// DefaultSocket is where the agent listens when the netconf names none.
const DefaultSocket = "/run/autonode/cni.sock"

// DefaultTimeout bounds one call when the netconf's agentTimeout is empty.
// ADD waits for an address at most this long, so it is short: the runtime
// retries on error 11 anyway.
const DefaultTimeout = 10 * time.Second

// Path is the HTTP path of the one endpoint.
const Path = "/v1/cni"

// maxSocketPath is sun_path's size less the terminating NUL.
const maxSocketPath = 107

// Request carries one CNI invocation: the verb, the CNI_* variables and the
// network configuration read from stdin, verbatim.
type Request struct {
	Command     string          `json:"command"`
	ContainerID string          `json:"containerID,omitempty"`
	Netns       string          `json:"netns,omitempty"`
	IfName      string          `json:"ifName,omitempty"`
	Args        string          `json:"args,omitempty"`
	Path        string          `json:"path,omitempty"`
	Config      json.RawMessage `json:"config"`
}

// Response is the agent's answer: Result (ADD only; already in the config's
// cniVersion) or Error.
type Response struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  *types.Error    `json:"error,omitempty"`
}

// ClientConf is the part of the netconf that the binary itself reads.
type ClientConf struct {
	// AgentSocket is the agent's socket path. Default is DefaultSocket.
	AgentSocket string `json:"agentSocket,omitempty"`
	// AgentTimeout is a Go duration bounding the call. Default is
	// DefaultTimeout.
	AgentTimeout string `json:"agentTimeout,omitempty"`
}

// ParseClientConf reads the socket path and timeout from a netconf. A
// netconf that is not JSON gives error 6, a bad field error 7.
func ParseClientConf(stdin []byte) (socket string, timeout time.Duration, _ *types.Error) {
	var c ClientConf
	if err := json.Unmarshal(stdin, &c); err != nil {
		return "", 0, types.NewError(types.ErrDecodingFailure, "decoding network configuration", err.Error())
	}
	socket, timeout = DefaultSocket, DefaultTimeout
	if c.AgentSocket != "" {
		if !filepath.IsAbs(c.AgentSocket) || len(c.AgentSocket) > maxSocketPath {
			return "", 0, types.NewError(types.ErrInvalidNetworkConfig,
				fmt.Sprintf("agentSocket %q must be an absolute path of at most %d bytes", c.AgentSocket, maxSocketPath), "")
		}
		socket = c.AgentSocket
	}
	if c.AgentTimeout != "" {
		d, err := time.ParseDuration(c.AgentTimeout)
		if err != nil || d <= 0 {
			return "", 0, types.NewError(types.ErrInvalidNetworkConfig,
				fmt.Sprintf("agentTimeout %q is not a positive duration", c.AgentTimeout), fmt.Sprint(err))
		}
		timeout = d
	}
	return socket, timeout, nil
}

// UnreachableError means the request never got an answer from the agent:
// the socket is missing or refuses connections, or the call timed out.
type UnreachableError struct {
	Socket string
	Err    error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("autonode agent at %s unreachable: %v", e.Socket, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Call sends req to the agent listening on socket and returns its answer.
// Transport failures are *UnreachableError.
func Call(ctx context.Context, socket string, req Request) (Response, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return Response{}, fmt.Errorf("encoding %s request: %w", req.Command, err)
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableKeepAlives: true,
	}}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://autonode"+Path, bytes.NewReader(body))
	if err != nil {
		return Response{}, fmt.Errorf("building %s request: %w", req.Command, err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(hreq)
	if err != nil {
		return Response{}, &UnreachableError{Socket: socket, Err: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Response{}, &UnreachableError{Socket: socket, Err: fmt.Errorf("reading response: %w", err)}
	}
	if resp.StatusCode != http.StatusOK {
		return Response{}, fmt.Errorf("agent at %s answered %s: %s", socket, resp.Status, bytes.TrimSpace(data))
	}
	var out Response
	if err := json.Unmarshal(data, &out); err != nil {
		return Response{}, fmt.Errorf("decoding agent response: %w", err)
	}
	return out, nil
}
