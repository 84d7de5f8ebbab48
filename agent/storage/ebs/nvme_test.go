package ebs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/autonode/autonode/sandbox/loopdev"
	"github.com/autonode/autonode/sandbox/privileged"
)

// TestAdminCmdLayout pins adminCmd to struct nvme_passthru_cmd of
// <linux/nvme_ioctl.h>, field by field.
func TestAdminCmdLayout(t *testing.T) {
	var c adminCmd
	for _, f := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof", unsafe.Sizeof(c), 72},
		{"nsid", unsafe.Offsetof(c.nsid), 4},
		{"metadata", unsafe.Offsetof(c.metadata), 16},
		{"addr", unsafe.Offsetof(c.addr), 24},
		{"metadata_len", unsafe.Offsetof(c.metadataLen), 32},
		{"data_len", unsafe.Offsetof(c.dataLen), 36},
		{"cdw10", unsafe.Offsetof(c.cdw10), 40},
		{"cdw15", unsafe.Offsetof(c.cdw15), 60},
		{"timeout_ms", unsafe.Offsetof(c.timeoutMs), 64},
		{"result", unsafe.Offsetof(c.result), 68},
	} {
		if f.got != f.want {
			t.Errorf("%s = %d, want %d", f.name, f.got, f.want)
		}
	}
	if nvmeIoctlAdminCmd != 0xC0484E41 {
		t.Errorf("NVME_IOCTL_ADMIN_CMD = %#x, want 0xC0484E41", nvmeIoctlAdminCmd)
	}
}

// TestNVMeRejectsOtherFiles runs the real ioctl path where this machine
// allows: it has no NVMe device, so what is checked is that anything else
// fails clearly, naming the path.
func TestNVMeRejectsOtherFiles(t *testing.T) {
	file := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(file, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "nvme9n1")
	for _, tt := range []struct {
		path string
		want error
	}{
		{file, ErrNotNVMe},
		{"/dev/null", ErrNotNVMe},
		{missing, fs.ErrNotExist},
	} {
		_, err := NVMe{}.IdentifyController(t.Context(), tt.path)
		if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.path) {
			t.Errorf("IdentifyController(%s) = %v, want %v naming the path", tt.path, err, tt.want)
		}
		_, err = NVMe{}.StatsLogPage(t.Context(), tt.path)
		if !errors.Is(err, tt.want) {
			t.Errorf("StatsLogPage(%s) = %v, want %v", tt.path, err, tt.want)
		}
	}
}

// TestPrivilegedNVMeRejectsLoopDevice sends the admin command to a real
// block device of another driver.
func TestPrivilegedNVMeRejectsLoopDevice(t *testing.T) {
	privileged.Require(t, privileged.Root, privileged.Loop)
	dev := loopdev.New(t, 1<<20).Path
	_, err := NVMe{}.IdentifyController(t.Context(), dev)
	if !errors.Is(err, ErrNotNVMe) || !strings.Contains(err.Error(), dev) {
		t.Errorf("IdentifyController(%s) = %v, want ErrNotNVMe naming the device", dev, err)
	}
}

// TestPrivilegedNVMeIdentifyMatchesSysfs identifies every NVMe namespace of
// the machine through the ioctl and checks the parse against what the
// kernel's driver shows in sysfs. On an EC2 instance it also reads each EBS
// volume's statistics page. Machines without NVMe devices skip it.
func TestPrivilegedNVMeIdentifyMatchesSysfs(t *testing.T) {
	privileged.Require(t, privileged.Root)
	devs, _ := filepath.Glob("/dev/nvme[0-9]*n1")
	if len(devs) == 0 {
		t.Skip("no NVMe namespaces on this machine")
	}
	for _, dev := range devs {
		t.Run(filepath.Base(dev), func(t *testing.T) {
			raw, err := NVMe{}.IdentifyController(t.Context(), dev)
			if err != nil {
				t.Fatal(err)
			}
			c, err := ParseIdentify(raw)
			if err != nil {
				t.Fatal(err)
			}
			sys := filepath.Join("/sys/class/block", filepath.Base(dev), "device")
			for _, f := range []struct{ attr, got string }{{"serial", c.Serial}, {"model", c.Model}, {"firmware_rev", c.Firmware}} {
				b, err := os.ReadFile(filepath.Join(sys, f.attr))
				if err != nil {
					t.Fatal(err)
				}
				if want := strings.TrimRight(string(b), " \n\x00"); f.got != want {
					t.Errorf("%s: identify says %q, sysfs %q", f.attr, f.got, want)
				}
			}
			t.Logf("%s: vendor %#04x model %q serial %q firmware %q EBS %v", dev, c.VendorID, c.Model, c.Serial, c.Firmware, c.IsEBS())
			if !c.IsEBS() {
				return
			}
			id, err := c.VolumeID()
			name, nameErr := c.DeviceName()
			t.Logf("EBS volume %s (%v), mapping name %q (%v)", id, err, name, nameErr)
			if err != nil {
				t.Error(err)
			}
			page, err := NVMe{}.StatsLogPage(t.Context(), dev)
			if err != nil {
				t.Fatal(err)
			}
			s, err := ParseStatsLogPage(page)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("stats: %+v", s)
		})
	}
}
