package csi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
	"github.com/onsi/gomega"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/autonode/autonode/sandbox/loopdev"
	"github.com/autonode/autonode/sandbox/privileged"
)

// sanityVolumeSize is small: every sanity volume is formatted ext4.
const sanityVolumeSize = 64 << 20

// sanityModeEnv selects the csi-sanity run of a child test process: Ginkgo
// runs one suite per process.
const sanityModeEnv = "AUTONODE_CSI_SANITY_MODE"

// TestPrivilegedSanity runs the CSI project's csi-sanity suite against the
// node service, each run in a child process:
//
//   - mount: every case, through the driver's own socket, with volumes
//     formatted ext4;
//   - block: the same with raw block volumes;
//   - flows: only the two node cases that csi-sanity runs when the plugin
//     offers a controller service ("should work", "should be idempotent":
//     stage and publish ten times over, then stats). They go through a
//     second socket that serves the driver's own Node service under an
//     Identity that also claims CONTROLLER_SERVICE.
//
// The driver has no controller service, and the node cases need volumes,
// so a fixture controller on another socket "creates" each volume as a
// sparse file on a loop device and feeds the driver's locator. Its own
// conformance is not the subject: the controller cases are skipped.
// docs/storage.md lists which cases apply and pass.
func TestPrivilegedSanity(t *testing.T) {
	privileged.Require(t, privileged.Root, privileged.Loop)
	for _, mode := range []string{"mount", "block", "flows"} {
		t.Run(mode, func(t *testing.T) {
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestSanitySuite$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), sanityModeEnv+"="+mode)
			out, err := cmd.CombinedOutput()
			passed := 0
			for line := range strings.Lines(string(out)) {
				if _, spec, ok := strings.Cut(line, "sanity passed: "); ok {
					passed++
					t.Logf("passed: %s", strings.TrimSpace(spec))
				} else if i := strings.Index(line, "sanity: "); i >= 0 && strings.Contains(line, "skipped") {
					t.Log(strings.TrimSpace(line[i:]))
				}
			}
			if err != nil || passed == 0 {
				t.Fatalf("csi-sanity (%s): %v, %d specs passed; its output:\n%s", mode, err, passed, out)
			}
		})
	}
}

// TestSanitySuite is one csi-sanity run, started by TestPrivilegedSanity.
func TestSanitySuite(t *testing.T) {
	mode := os.Getenv(sanityModeEnv)
	if mode == "" {
		t.Skip("run by TestPrivilegedSanity, in a process of its own")
	}
	privileged.Require(t, privileged.Root, privileged.Loop)
	h := startDriver(t, Options{VolumeLimit: limit(25)})
	dir := shortTempDir(t)
	ctrl := &fixtureController{dir: dir, locator: h.locator, volumes: map[string]*fixtureVolume{}}
	ctrlSock := filepath.Join(dir, "controller.sock")
	serve(t, ctrlSock, func(srv *grpc.Server) {
		csi.RegisterIdentityServer(srv, &identity{d: h.d})
		csi.RegisterControllerServer(srv, ctrl)
	})
	t.Cleanup(func() { ctrl.deleteAll(t) })

	cfg := sanity.NewTestConfig()
	cfg.Address = h.d.Endpoint()
	cfg.ControllerAddress = ctrlSock
	cfg.TargetPath = filepath.Join(dir, "target")
	cfg.StagingPath = filepath.Join(dir, "staging")
	unmountOnCleanup(t, cfg.TargetPath+"/target", cfg.TargetPath+"/other_target", cfg.StagingPath)
	cfg.TestVolumeSize = sanityVolumeSize
	// Without a controller nothing grows the device, and NodeExpandVolume
	// refuses a size the device does not have.
	cfg.TestVolumeExpandSize = sanityVolumeSize
	cfg.IDGen = ebsIDs{}

	suite, reporter := ginkgo.GinkgoConfiguration()
	reporter.NoColor = true
	// These describe the controller service, which autonode does not ship;
	// run against the fixture they would test only the fixture.
	suite.SkipStrings = append(suite.SkipStrings, `Controller Service \[Controller Server\]`)
	switch mode {
	case "mount":
	case "block":
		cfg.TestVolumeAccessType = "block"
	case "flows":
		flowsSock := filepath.Join(dir, "flows.sock")
		serve(t, flowsSock, func(srv *grpc.Server) {
			csi.RegisterIdentityServer(srv, controllerClaim{&identity{d: h.d}})
			csi.RegisterNodeServer(srv, &node{d: h.d})
		})
		cfg.Address = flowsSock
		suite.FocusStrings = append(suite.FocusStrings, `Node Service should (work|be idempotent)`)
	default:
		t.Fatalf("%s=%q: want mount, block or flows", sanityModeEnv, mode)
	}

	sc := sanity.GinkgoTest(&cfg)
	defer sc.Finalize()
	gomega.RegisterFailHandler(ginkgo.Fail)
	// One line per spec that ran, and a count of the rest, so that the log
	// shows which cases apply to a node-only driver.
	ginkgo.ReportAfterSuite("autonode summary", func(r ginkgo.Report) {
		skipped := 0
		for _, spec := range r.SpecReports {
			if spec.LeafNodeType != types.NodeTypeIt {
				continue
			}
			if spec.State == types.SpecStateSkipped || spec.State == types.SpecStatePending {
				skipped++
				continue
			}
			t.Logf("sanity %s: %s", spec.State, spec.FullText())
		}
		t.Logf("sanity: %d specs skipped or pending", skipped)
	})
	if !ginkgo.RunSpecs(t, "CSI sanity: autonode node service ("+mode+")", suite, reporter) {
		t.Error("csi-sanity failed; see the specs above")
	}
}

// serve runs a gRPC server on a unix socket until the test ends.
func serve(t *testing.T, socket string, register func(*grpc.Server)) {
	t.Helper()
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	register(srv)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
}

// controllerClaim is the driver's Identity plus a CONTROLLER_SERVICE claim,
// the only thing that makes csi-sanity run its full node flows.
type controllerClaim struct{ *identity }

func (c controllerClaim) GetPluginCapabilities(ctx context.Context, req *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	resp, err := c.identity.GetPluginCapabilities(ctx, req)
	if err != nil {
		return nil, err
	}
	resp.Capabilities = append(resp.Capabilities, &csi.PluginCapability{Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{
		Type: csi.PluginCapability_Service_CONTROLLER_SERVICE,
	}}})
	return resp, nil
}

// ebsIDs generates ids shaped like EBS volume and EC2 instance ids.
type ebsIDs struct{}

func randomHex(n int) string {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

func (ebsIDs) GenerateUniqueValidVolumeID() string { return "vol-0" + randomHex(16) }
func (ebsIDs) GenerateInvalidVolumeID() string     { return "not-a-volume-id" }
func (ebsIDs) GenerateUniqueValidNodeID() string   { return "i-0" + randomHex(16) }
func (ebsIDs) GenerateInvalidNodeID() string       { return "not-an-instance-id" }

// fixtureController creates volumes as loop devices over sparse files,
// which the node service then finds through the fixture locator, as it
// would find an attached EBS volume.
type fixtureController struct {
	csi.UnimplementedControllerServer
	dir     string
	locator *fixtureLocator

	mu      sync.Mutex
	volumes map[string]*fixtureVolume // by name
}

type fixtureVolume struct {
	id, file string
	loop     *loopdev.Device
	size     int64
}

func (c *fixtureController) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: []*csi.ControllerServiceCapability{{
		Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{Type: csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME}},
	}}}, nil
}

func (c *fixtureController) CreateVolume(_ context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name is missing")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.volumes[req.GetName()]
	if !ok {
		size := req.GetCapacityRange().GetRequiredBytes()
		if size == 0 {
			size = sanityVolumeSize
		}
		v = &fixtureVolume{id: ebsIDs{}.GenerateUniqueValidVolumeID(), size: size}
		v.file = filepath.Join(c.dir, v.id+".img")
		f, err := os.Create(v.file)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		err = f.Truncate(size)
		_ = f.Close()
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		if v.loop, err = loopdev.Attach(v.file); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		c.volumes[req.GetName()] = v
		c.locator.add(v.id, v.loop.Path)
	}
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{VolumeId: v.id, CapacityBytes: v.size}}, nil
}

func (c *fixtureController) DeleteVolume(_ context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, v := range c.volumes {
		if v.id == req.GetVolumeId() {
			if err := c.delete(v); err != nil {
				return nil, status.Error(codes.Internal, err.Error())
			}
			delete(c.volumes, name)
		}
	}
	return &csi.DeleteVolumeResponse{}, nil
}

func (c *fixtureController) delete(v *fixtureVolume) error {
	c.locator.remove(v.id)
	if err := v.loop.Detach(); err != nil {
		return err
	}
	if err := os.Remove(v.file); err != nil {
		return fmt.Errorf("removing %s: %w", v.file, err)
	}
	return nil
}

// deleteAll detaches what a failed run left behind.
func (c *fixtureController) deleteAll(t *testing.T) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, v := range c.volumes {
		if err := c.delete(v); err != nil {
			t.Errorf("fixture volume %s: %v", name, err)
		}
		delete(c.volumes, name)
	}
}
