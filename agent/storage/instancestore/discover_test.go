package instancestore

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestDiscover(t *testing.T) {
	sys := t.TempDir()
	model := func(name, m string) {
		writeFile(t, filepath.Join(sys, "block", name, "device", "model"), m)
	}
	model("nvme0n1", "Amazon Elastic Block Store              \n") // the root volume
	model("nvme10n1", InstanceStoreModel+"        \n")
	model("nvme2n1", InstanceStoreModel+"\n")
	model("nvme1n1", InstanceStoreModel)
	model("nvme3n1", "Amazon Elastic Block Store\n")
	writeFile(t, filepath.Join(sys, "block", "loop0", "device", "model"), InstanceStoreModel) // not NVMe
	if err := os.MkdirAll(filepath.Join(sys, "block", "nvme4n1"), 0o755); err != nil {        // no model file
		t.Fatal(err)
	}

	got, err := Discover(sys, "/dev")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/dev/nvme1n1", "/dev/nvme2n1", "/dev/nvme10n1"}
	if !slices.Equal(got, want) {
		t.Errorf("Discover() = %v, want %v", got, want)
	}

	if got, err := Discover(t.TempDir(), "/dev"); err == nil || !strings.Contains(err.Error(), "listing block devices") {
		t.Errorf("Discover(no block dir) = %v, %v; want an error", got, err)
	}
	empty := t.TempDir()
	if err := os.Mkdir(filepath.Join(empty, "block"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := Discover(empty, "/dev"); err != nil || len(got) != 0 {
		t.Errorf("Discover(no disks) = %v, %v; want none", got, err)
	}
}

func TestKubeletStarted(t *testing.T) {
	proc := t.TempDir()
	writeFile(t, filepath.Join(proc, "1", "comm"), "init\n")
	writeFile(t, filepath.Join(proc, "self", "comm"), "kubelet\n") // not a pid: skipped
	writeFile(t, filepath.Join(proc, "4242", "comm"), "kubelet-helper\n")
	marker := filepath.Join(t.TempDir(), "kubeconfig")

	if started, why, err := kubeletStarted([]string{marker}, proc, "kubelet"); err != nil || started {
		t.Fatalf("kubeletStarted() = %v (%s), %v; want not started", started, why, err)
	}
	writeFile(t, filepath.Join(proc, "777", "comm"), "kubelet\n")
	started, why, err := kubeletStarted([]string{marker}, proc, "kubelet")
	if err != nil || !started || !strings.Contains(why, "pid 777") {
		t.Fatalf("kubeletStarted() = %v (%s), %v; want started by pid 777", started, why, err)
	}
	if started, _, _ := kubeletStarted(nil, proc, ""); started {
		t.Error("process check ran although turned off")
	}
	writeFile(t, marker, "")
	started, why, err = kubeletStarted([]string{marker}, t.TempDir(), "")
	if err != nil || !started || !strings.Contains(why, marker) {
		t.Fatalf("kubeletStarted() = %v (%s), %v; want started by the marker", started, why, err)
	}
}
