package csi

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/autonode/autonode/sandbox/privileged"
	"github.com/autonode/autonode/sandbox/testenv"
)

// TestPrivilegedRealKubeletRegistersDriver registers the driver with a real
// kubelet through its plugins_registry folder, and expects the CSINode
// object kube-scheduler reads: the driver, the instance id as node id, the
// volume limit and the zone topology key, plus the zone label on the Node.
func TestPrivilegedRealKubeletRegistersDriver(t *testing.T) {
	privileged.Require(t, privileged.Root, privileged.APIServer)
	if _, err := testenv.KubeletBinary(); err != nil {
		privileged.Missing(t, "kubelet", err)
	}
	env := testenv.Start(t, testenv.Options{})
	kubelet := testenv.StartKubelet(t, env, testenv.KubeletOptions{})

	const driverName, instanceID, zone = "ebs.csi.autonode.dev", "i-0123456789abcdef0", "us-west-2c"
	h := startDriver(t, Options{
		DriverName:      driverName,
		NodeID:          instanceID,
		Zone:            zone,
		VolumeLimit:     limit(24),
		Endpoint:        filepath.Join(kubelet.RootDir, "plugins", driverName, "csi.sock"),
		RegistrationDir: filepath.Join(kubelet.RootDir, "plugins_registry"),
	})

	cs, err := kubernetes.NewForConfig(env.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	var got *storagev1.CSINodeDriver
	err = wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		n, err := cs.StorageV1().CSINodes().Get(ctx, kubelet.NodeName, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for i := range n.Spec.Drivers {
			if n.Spec.Drivers[i].Name == driverName {
				got = &n.Spec.Drivers[i]
				return h.d.Ready() == nil, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("CSINode %s never listed %s with the driver ready (driver %s; Ready: %v): %v",
			kubelet.NodeName, driverName, describe(got), h.d.Ready(), err)
	}
	t.Logf("the kubelet registered %s in %s", driverName, time.Since(start).Round(time.Millisecond))
	if got.NodeID != instanceID || got.Allocatable == nil || got.Allocatable.Count == nil || *got.Allocatable.Count != 24 ||
		!slices.Contains(got.TopologyKeys, ZoneTopologyKey) {
		t.Errorf("CSINode driver %s, want node id %s, 24 volumes and key %s", describe(got), instanceID, ZoneTopologyKey)
	}
	node, err := cs.CoreV1().Nodes().Get(t.Context(), kubelet.NodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if node.Labels[ZoneTopologyKey] != zone {
		t.Errorf("Node labels %v, want %s=%s from the driver's topology", node.Labels, ZoneTopologyKey, zone)
	}
}

func describe(d *storagev1.CSINodeDriver) string {
	if d == nil {
		return "absent"
	}
	count := "nil"
	if d.Allocatable != nil && d.Allocatable.Count != nil {
		count = fmt.Sprint(*d.Allocatable.Count)
	}
	return fmt.Sprintf("{nodeID %s, count %s, keys %v}", d.NodeID, count, d.TopologyKeys)
}
