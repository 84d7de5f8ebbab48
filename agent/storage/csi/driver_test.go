package csi

import (
	"context"
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

func TestNewChecksOptions(t *testing.T) {
	valid := Options{NodeID: "i-0abc", Zone: "us-west-2a", Locator: newFixtureLocator()}
	tests := []struct {
		name   string
		modify func(*Options)
		want   string // substring of the error; empty for success
	}{
		{"defaults", func(*Options) {}, ""},
		{"custom name", func(o *Options) { o.DriverName = "ebs.csi.autonode.dev" }, ""},
		{"name with slash", func(o *Options) { o.DriverName = "ebs/csi" }, "driver name"},
		{"name ending in a dot", func(o *Options) { o.DriverName = "ebs.csi." }, "driver name"},
		{"name with an underscore", func(o *Options) { o.DriverName = "ebs_csi" }, "driver name"},
		{"name with an empty label", func(o *Options) { o.DriverName = "ebs..csi" }, "driver name"},
		{"name ending in a digit", func(o *Options) { o.DriverName = "ebs2" }, ""},
		{"name in capitals", func(o *Options) { o.DriverName = "EBS.CSI.Example.com" }, ""},
		{"name of 64 characters", func(o *Options) { o.DriverName = "a" + strings.Repeat("b", 62) + "c" }, "driver name"},
		{"name of 63 characters", func(o *Options) { o.DriverName = "a" + strings.Repeat("b", 61) + "c" }, ""},
		{"no node id", func(o *Options) { o.NodeID = "" }, "node id"},
		{"no zone", func(o *Options) { o.Zone = "" }, "zone"},
		{"no locator", func(o *Options) { o.Locator = nil }, "locator"},
		{"relative endpoint", func(o *Options) { o.Endpoint = "csi.sock" }, "absolute"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := valid
			tt.modify(&opts)
			d, err := New(opts)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, %v; want an error about %q", d, err, tt.want)
			}
		})
	}
}

func TestDefaultPaths(t *testing.T) {
	d, err := New(Options{NodeID: "i-0abc", Zone: "us-west-2a", Locator: newFixtureLocator()})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := d.Endpoint(), "/var/lib/kubelet/plugins/ebs.csi.aws.com/csi.sock"; got != want {
		t.Errorf("Endpoint = %s, want %s", got, want)
	}
	if got, want := d.RegistrationSocket(), "/var/lib/kubelet/plugins_registry/ebs.csi.aws.com-reg.sock"; got != want {
		t.Errorf("RegistrationSocket = %s, want %s", got, want)
	}
}

func TestParseCapability(t *testing.T) {
	tests := []struct {
		name string
		cap  *csi.VolumeCapability
		code codes.Code
		want volumeCap
	}{
		{"missing", nil, codes.InvalidArgument, volumeCap{}},
		{"default fs", mountCap("", rwo), codes.OK, volumeCap{fsType: "ext4"}},
		{"xfs with flags", mountCap("xfs", rwo, "noatime"), codes.OK, volumeCap{fsType: "xfs", flags: []string{"noatime"}}},
		{"reader only", mountCap("ext4", csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY), codes.OK, volumeCap{fsType: "ext4", readOnly: true}},
		{"block", blockCap(rwo), codes.OK, volumeCap{block: true}},
		{"multi-attach block", blockCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER), codes.OK, volumeCap{block: true}},
		{"multi-attach file system", mountCap("ext4", csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER), codes.FailedPrecondition, volumeCap{}},
		{"multi-node reader", mountCap("ext4", csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY), codes.FailedPrecondition, volumeCap{}},
		{"btrfs", mountCap("btrfs", rwo), codes.InvalidArgument, volumeCap{}},
		{"no access mode", &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}}, codes.InvalidArgument, volumeCap{}},
		{"no access type", &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: rwo}}, codes.InvalidArgument, volumeCap{}},
		{"mount group", &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{VolumeMountGroup: "1000"}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: rwo},
		}, codes.InvalidArgument, volumeCap{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCapability(tt.cap)
			if status.Code(err) != tt.code {
				t.Fatalf("parseCapability: %v, want code %s", err, tt.code)
			}
			if err == nil && (got.block != tt.want.block || got.fsType != tt.want.fsType || got.readOnly != tt.want.readOnly ||
				strings.Join(got.flags, ",") != strings.Join(tt.want.flags, ",")) {
				t.Errorf("parseCapability = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestCompatibleFS(t *testing.T) {
	tests := []struct {
		have, want string
		ok         bool
	}{
		{"ext4", "ext4", true}, {"xfs", "xfs", true}, {"ext3", "ext4", true}, {"ext2", "ext4", true},
		{"ext4", "ext3", false}, {"xfs", "ext4", false}, {"ext4", "xfs", false}, {partitionsFormat, "ext4", false},
	}
	for _, tt := range tests {
		if got := compatibleFS(tt.have, tt.want); got != tt.ok {
			t.Errorf("compatibleFS(%q, %q) = %t, want %t", tt.have, tt.want, got, tt.ok)
		}
	}
}

func TestInflightRefusesConcurrentOperations(t *testing.T) {
	f := inflight{busy: map[string]bool{}}
	release, err := f.acquire("vol-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.acquire("vol-1"); status.Code(err) != codes.Aborted {
		t.Fatalf("second acquire: %v, want Aborted", err)
	}
	other, err := f.acquire("vol-2")
	if err != nil {
		t.Fatalf("another volume: %v", err)
	}
	other()
	release()
	again, err := f.acquire("vol-1")
	if err != nil {
		t.Fatalf("acquire after release: %v", err)
	}
	again()
}

func TestToolErrorsNamePackages(t *testing.T) {
	err := checkTools("autonode-no-such-tool", "mkfs.xfs-missing-for-test")
	if err == nil {
		t.Fatal("checkTools found tools that do not exist")
	}
	for _, tool := range []string{"mkfs.xfs", "xfs_growfs", "resize2fs", "blkid", "mkfs.ext4"} {
		if toolPackage(tool) == "the package that provides it" {
			t.Errorf("toolPackage(%s) names no package", tool)
		}
	}
	if got := toolPackage("mkfs.xfs"); got != "xfsprogs" {
		t.Errorf("toolPackage(mkfs.xfs) = %s, want xfsprogs", got)
	}
	if !strings.Contains(err.Error(), "autonode-no-such-tool is not installed") {
		t.Errorf("error %q does not name the tool", err)
	}
}

func TestIdentity(t *testing.T) {
	h := startDriver(t, Options{DriverName: "ebs.csi.autonode.dev", Version: "v1.2.3"})
	ctx := t.Context()
	info, err := h.id.GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.GetName() != "ebs.csi.autonode.dev" || info.GetVendorVersion() != "v1.2.3" {
		t.Errorf("GetPluginInfo = %v", info)
	}
	caps, err := h.id.GetPluginCapabilities(ctx, &csi.GetPluginCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var topology, controller, online bool
	for _, c := range caps.GetCapabilities() {
		switch c.GetService().GetType() {
		case csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS:
			topology = true
		case csi.PluginCapability_Service_CONTROLLER_SERVICE:
			controller = true
		}
		online = online || c.GetVolumeExpansion().GetType() == csi.PluginCapability_VolumeExpansion_ONLINE
	}
	if !topology || controller || !online {
		t.Errorf("capabilities %v: want topology and online expansion, and no controller service", caps)
	}
	probe, err := h.id.Probe(ctx, &csi.ProbeRequest{})
	if err != nil {
		t.Fatalf("Probe: %v (the tools are installed on the test machine)", err)
	}
	if !probe.GetReady().GetValue() {
		t.Errorf("Probe = %v, want ready", probe)
	}
}

func TestNodeGetInfo(t *testing.T) {
	tests := []struct {
		driver string
		want   map[string]string
	}{
		{"", map[string]string{ZoneTopologyKey: "us-west-2b", "topology.ebs.csi.aws.com/zone": "us-west-2b"}},
		{"ebs.csi.autonode.dev", map[string]string{ZoneTopologyKey: "us-west-2b"}},
	}
	for _, tt := range tests {
		t.Run("driver "+tt.driver, func(t *testing.T) {
			h := startDriver(t, Options{DriverName: tt.driver, NodeID: "i-0fedcba9876543210", Zone: "us-west-2b", VolumeLimit: limit(26)})
			info, err := h.node.NodeGetInfo(t.Context(), &csi.NodeGetInfoRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if info.GetNodeId() != "i-0fedcba9876543210" || info.GetMaxVolumesPerNode() != 26 {
				t.Errorf("NodeGetInfo = %v", info)
			}
			if got := info.GetAccessibleTopology().GetSegments(); !maps.Equal(got, tt.want) {
				t.Errorf("topology = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestNodeGetCapabilities(t *testing.T) {
	h := startDriver(t, Options{})
	resp, err := h.node.NodeGetCapabilities(t.Context(), &csi.NodeGetCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[csi.NodeServiceCapability_RPC_Type]bool{}
	for _, c := range resp.GetCapabilities() {
		got[c.GetRpc().GetType()] = true
	}
	want := map[csi.NodeServiceCapability_RPC_Type]bool{
		csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME: true,
		csi.NodeServiceCapability_RPC_GET_VOLUME_STATS:     true,
		csi.NodeServiceCapability_RPC_EXPAND_VOLUME:        true,
	}
	if !maps.Equal(got, want) {
		t.Errorf("capabilities = %v, want %v", got, want)
	}
}

// TestRequestValidation checks the error codes the CSI spec gives for bad
// requests; none of them touches a device.
func TestRequestValidation(t *testing.T) {
	h := startDriver(t, Options{})
	dir := t.TempDir()
	staging, target := filepath.Join(dir, "staging"), filepath.Join(dir, "target")
	const absent = "vol-0aaaaaaaaaaaaaaaa"
	tests := []struct {
		name string
		call func(context.Context) error
		code codes.Code
	}{
		{"stage without volume id", func(ctx context.Context) error {
			_, err := h.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{StagingTargetPath: staging, VolumeCapability: mountCap("", rwo)})
			return err
		}, codes.InvalidArgument},
		{"stage without staging path", func(ctx context.Context) error {
			_, err := h.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: absent, VolumeCapability: mountCap("", rwo)})
			return err
		}, codes.InvalidArgument},
		{"stage with a relative staging path", func(ctx context.Context) error {
			_, err := h.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: absent, StagingTargetPath: "staging", VolumeCapability: mountCap("", rwo)})
			return err
		}, codes.InvalidArgument},
		{"stage without capability", func(ctx context.Context) error {
			_, err := h.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: absent, StagingTargetPath: staging})
			return err
		}, codes.InvalidArgument},
		{"stage with an unsupported access mode", func(ctx context.Context) error {
			_, err := h.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: absent, StagingTargetPath: staging,
				VolumeCapability: mountCap("", csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER)})
			return err
		}, codes.FailedPrecondition},
		{"stage a volume that is not attached", func(ctx context.Context) error {
			_, err := h.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: absent, StagingTargetPath: staging, VolumeCapability: mountCap("", rwo)})
			return err
		}, codes.NotFound},
		{"unstage without volume id", func(ctx context.Context) error {
			_, err := h.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{StagingTargetPath: staging})
			return err
		}, codes.InvalidArgument},
		{"unstage without staging path", func(ctx context.Context) error {
			_, err := h.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: absent})
			return err
		}, codes.InvalidArgument},
		{"unstage what was never staged", func(ctx context.Context) error {
			_, err := h.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: absent, StagingTargetPath: staging})
			return err
		}, codes.OK},
		{"publish without volume id", func(ctx context.Context) error {
			_, err := h.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{TargetPath: target, StagingTargetPath: staging, VolumeCapability: mountCap("", rwo)})
			return err
		}, codes.InvalidArgument},
		{"publish without target", func(ctx context.Context) error {
			_, err := h.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: absent, StagingTargetPath: staging, VolumeCapability: mountCap("", rwo)})
			return err
		}, codes.InvalidArgument},
		{"publish without capability", func(ctx context.Context) error {
			_, err := h.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: absent, TargetPath: target, StagingTargetPath: staging})
			return err
		}, codes.InvalidArgument},
		{"publish without staging path", func(ctx context.Context) error {
			_, err := h.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: absent, TargetPath: target, VolumeCapability: mountCap("", rwo)})
			return err
		}, codes.InvalidArgument},
		{"publish what is not staged", func(ctx context.Context) error {
			_, err := h.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: absent, TargetPath: target, StagingTargetPath: staging, VolumeCapability: mountCap("", rwo)})
			return err
		}, codes.FailedPrecondition},
		{"publish a block volume that is not attached", func(ctx context.Context) error {
			_, err := h.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: absent, TargetPath: target, StagingTargetPath: staging, VolumeCapability: blockCap(rwo)})
			return err
		}, codes.NotFound},
		{"unpublish without volume id", func(ctx context.Context) error {
			_, err := h.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{TargetPath: target})
			return err
		}, codes.InvalidArgument},
		{"unpublish without target", func(ctx context.Context) error {
			_, err := h.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: absent})
			return err
		}, codes.InvalidArgument},
		{"unpublish what was never published", func(ctx context.Context) error {
			_, err := h.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: absent, TargetPath: target})
			return err
		}, codes.OK},
		{"stats without volume id", func(ctx context.Context) error {
			_, err := h.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumePath: target})
			return err
		}, codes.InvalidArgument},
		{"stats without path", func(ctx context.Context) error {
			_, err := h.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: absent})
			return err
		}, codes.InvalidArgument},
		{"stats of a path that does not exist", func(ctx context.Context) error {
			_, err := h.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: absent, VolumePath: target})
			return err
		}, codes.NotFound},
		{"stats of a volume that is not attached", func(ctx context.Context) error {
			_, err := h.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: absent, VolumePath: dir})
			return err
		}, codes.NotFound},
		{"expand without volume id", func(ctx context.Context) error {
			_, err := h.node.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumePath: target})
			return err
		}, codes.InvalidArgument},
		{"expand without path", func(ctx context.Context) error {
			_, err := h.node.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: absent})
			return err
		}, codes.InvalidArgument},
		{"expand with a bad capability", func(ctx context.Context) error {
			_, err := h.node.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: absent, VolumePath: dir, VolumeCapability: mountCap("zfs", rwo)})
			return err
		}, codes.InvalidArgument},
		{"expand a volume that is not attached", func(ctx context.Context) error {
			_, err := h.node.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: absent, VolumePath: dir})
			return err
		}, codes.NotFound},
		{"volume health is not offered", func(ctx context.Context) error {
			_, err := h.node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: absent})
			return err
		}, codes.Unimplemented},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantCode(t, tt.call(t.Context()), tt.code)
		})
	}
}

// TestRegistrationHandshake plays the kubelet's plugin watcher: it dials
// the registration socket, reads the plugin's info, calls NodeGetInfo on
// the endpoint it names, and reports the outcome.
func TestRegistrationHandshake(t *testing.T) {
	h := startDriver(t, Options{DriverName: "ebs.csi.autonode.dev", VolumeLimit: limit(27)})
	if err := h.d.Ready(); err == nil || !strings.Contains(err.Error(), "not registered") {
		t.Fatalf("Ready before registration = %v, want not registered", err)
	}
	reg := registerapi.NewRegistrationClient(dial(t, h.d.RegistrationSocket()))
	ctx := t.Context()
	info, err := reg.GetInfo(ctx, &registerapi.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.GetType() != registerapi.CSIPlugin || info.GetName() != "ebs.csi.autonode.dev" ||
		info.GetEndpoint() != h.d.Endpoint() || strings.Join(info.GetSupportedVersions(), ",") != "1.0.0" {
		t.Fatalf("GetInfo = %v", info)
	}
	if filepath.Base(h.d.RegistrationSocket()) != "ebs.csi.autonode.dev-reg.sock" {
		t.Errorf("registration socket %s, want <driver>-reg.sock", h.d.RegistrationSocket())
	}
	// The kubelet reads the node id and limit from the endpoint it was given.
	nodeInfo, err := csi.NewNodeClient(dial(t, info.GetEndpoint())).NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if nodeInfo.GetMaxVolumesPerNode() != 27 {
		t.Errorf("NodeGetInfo through the registered endpoint = %v", nodeInfo)
	}

	if _, err := reg.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{Error: "driver name clashes"}); err != nil {
		t.Fatal(err)
	}
	if err := h.d.Ready(); err == nil || !strings.Contains(err.Error(), "driver name clashes") {
		t.Errorf("Ready after a refusal = %v, want the kubelet's reason", err)
	}
	if _, err := reg.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatal(err)
	}
	if err := h.d.Ready(); err != nil {
		t.Errorf("Ready after registration: %v", err)
	}
}

func TestRunFailsWithoutVolumeLimit(t *testing.T) {
	for _, tt := range []struct {
		name  string
		limit func(context.Context) (int64, error)
		want  string
	}{
		{"error", func(context.Context) (int64, error) { return 0, errors.New("DescribeInstanceTypes: throttled") }, "throttled"},
		{"negative", limit(-1), "negative"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := shortTempDir(t)
			d, err := New(Options{NodeID: "i-0abc", Zone: "us-west-2a", Locator: newFixtureLocator(), VolumeLimit: tt.limit,
				Endpoint: filepath.Join(dir, "csi.sock"), RegistrationDir: dir})
			if err != nil {
				t.Fatal(err)
			}
			err = d.Run(t.Context())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run = %v, want an error about %q", err, tt.want)
			}
			// The kubelet must not see a driver whose limit is unknown.
			if _, err := os.Stat(d.RegistrationSocket()); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("registration socket exists after a failed start: %v", err)
			}
		})
	}
}

func TestFirstNonZero(t *testing.T) {
	tests := []struct {
		name   string
		size   int64
		marks  []int64 // offsets of non-zero bytes
		limit  int64
		wanted int64
	}{
		{"zeros", 1 << 20, nil, 1 << 20, -1},
		{"first byte", 1 << 20, []int64{0}, 1 << 20, 0},
		{"in the second buffer", 1 << 20, []int64{65536 + 5, 900000}, 1 << 20, 65541},
		{"beyond the limit", 2 << 20, []int64{1 << 20}, 1 << 20, -1},
		{"last byte within the limit", 2 << 20, []int64{1<<20 - 1}, 1 << 20, 1<<20 - 1},
		{"shorter than the limit", 4096, nil, 1 << 20, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "disk")
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Truncate(tt.size); err != nil {
				t.Fatal(err)
			}
			for _, m := range tt.marks {
				if _, err := f.WriteAt([]byte{0x5a}, m); err != nil {
					t.Fatal(err)
				}
			}
			_ = f.Close()
			got, err := firstNonZero(path, tt.limit)
			if err != nil || got != tt.wanted {
				t.Errorf("firstNonZero = %d, %v; want %d", got, err, tt.wanted)
			}
		})
	}
}
