package deviceplugins_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/autonode/autonode/deviceplugins"
	"github.com/autonode/autonode/deviceplugins/neuron"
	"github.com/autonode/autonode/sandbox/privileged"
	"github.com/autonode/autonode/sandbox/testenv"
)

// realKubeletTimeout bounds each wait on the real kubelet; it reports
// capacity every second, but two shared cores can be slow.
const realKubeletTimeout = 90 * time.Second

// TestPrivilegedRealKubeletAdvertisesDevices registers a neuron device
// plugin, over a fake trn1.32xlarge sysfs, with a real kubelet, and checks
// that the Node it registered advertises the devices, and one fewer
// allocatable once a device reports an uncorrectable ECC error.
func TestPrivilegedRealKubeletAdvertisesDevices(t *testing.T) {
	privileged.Require(t, privileged.Root, privileged.APIServer)
	if _, err := testenv.KubeletBinary(); err != nil {
		privileged.Missing(t, "kubelet", err)
	}
	env := testenv.Start(t, testenv.Options{})
	kubelet := testenv.StartKubelet(t, env, testenv.KubeletOptions{})

	const devices = 16
	sysfs := fakeTrn1Sysfs(t, devices)
	backend, err := neuron.New(neuron.Options{SysfsRoot: sysfs, Mode: neuron.ModeDevice, PollInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	plugin := deviceplugins.NewPlugin(backend, deviceplugins.Options{
		PluginDir:      kubelet.DevicePluginDir(),
		Logger:         slog.New(slog.NewTextHandler(t.Output(), nil)),
		InitialBackoff: 100 * time.Millisecond,
		MaxBackoff:     time.Second,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- plugin.Run(ctx) }()
	// Registered after the kubelet's cleanup, so it runs before it.
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("plugin Run: %v", err)
		}
	})

	cs, err := kubernetes.NewForConfig(env.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitForNodeResource(t, cs, kubelet.NodeName, neuron.ResourceDevice, devices, devices)
	t.Logf("Node %s advertised %d %s %s after the plugin started", kubelet.NodeName, devices, neuron.ResourceDevice, time.Since(start).Round(time.Millisecond))
	if err := plugin.Ready(); err != nil {
		t.Errorf("plugin not ready although the kubelet advertises it: %v", err)
	}

	// An uncorrectable SRAM ECC error on neuron3: the kubelet keeps counting
	// it in capacity but no longer offers it.
	counter := filepath.Join(sysfs, "devices/virtual/neuron_device/neuron3/stats/hardware/sram_ecc_uncorrected")
	if err := os.WriteFile(counter, []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	waitForNodeResource(t, cs, kubelet.NodeName, neuron.ResourceDevice, devices, devices-1)
	t.Logf("allocatable dropped to %d %s after the device turned unhealthy", devices-1, time.Since(start).Round(time.Millisecond))
}

// waitForNodeResource waits until the Node's status shows capacity and
// allocatable of resource.
func waitForNodeResource(t *testing.T, cs kubernetes.Interface, node, resource string, capacity, allocatable int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), realKubeletTimeout)
	defer cancel()
	var last *corev1.Node
	err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return false, nil // the apiserver is local; keep trying until the deadline
		}
		last = n
		c, a := n.Status.Capacity[corev1.ResourceName(resource)], n.Status.Allocatable[corev1.ResourceName(resource)]
		return c.Value() == capacity && a.Value() == allocatable, nil
	})
	if err != nil {
		got := "no Node"
		if last != nil {
			c, a := last.Status.Capacity[corev1.ResourceName(resource)], last.Status.Allocatable[corev1.ResourceName(resource)]
			got = fmt.Sprintf("capacity %s, allocatable %s", c.String(), a.String())
		}
		t.Fatalf("Node %s: want %s capacity %d, allocatable %d; have %s: %v", node, resource, capacity, allocatable, got, err)
	}
}

// fakeTrn1Sysfs lays out n Neuron devices with two cores each under a fresh
// sysfs root, as the Neuron driver does on a trn1.32xlarge (a 4×4 torus).
func fakeTrn1Sysfs(t *testing.T, n int) string {
	t.Helper()
	root := t.TempDir()
	for i := range n {
		dir := filepath.Join(root, "devices/virtual/neuron_device", fmt.Sprintf("neuron%d", i))
		r, c := i/4, i%4
		files := map[string]string{
			"core_count": "2",
			"connected_devices": fmt.Sprintf("%d, %d, %d, %d",
				((r+3)%4)*4+c, r*4+(c+3)%4, ((r+1)%4)*4+c, r*4+(c+1)%4),
			"stats/hardware/mem_ecc_uncorrected":  "0\n",
			"stats/hardware/sram_ecc_uncorrected": "0\n",
		}
		for name, content := range files {
			path := filepath.Join(dir, name)
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root
}
