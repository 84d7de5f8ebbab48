package ebs_test

import (
	"encoding/binary"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/autonode/autonode/agent/storage/ebs"
	"github.com/autonode/autonode/agent/storage/ebs/ebstest"
)

// specPage lays out Identify Controller data by hand at the offsets of the
// NVMe base specification, independently of ebstest's builder.
func specPage(vid uint16, sn, mn, fr string, vs []byte) []byte {
	b := make([]byte, 4096)
	binary.LittleEndian.PutUint16(b[0:2], vid)
	binary.LittleEndian.PutUint16(b[2:4], vid)
	copy(b[4:24], sn+strings.Repeat(" ", 20-len(sn)))
	copy(b[24:64], mn+strings.Repeat(" ", 40-len(mn)))
	copy(b[64:72], fr+strings.Repeat(" ", 8-len(fr)))
	copy(b[3072:], vs)
	return b
}

func TestParseIdentify(t *testing.T) {
	garbage := make([]byte, 4096)
	for i := range garbage {
		garbage[i] = byte(i*7 + 0x80)
	}
	nulPadded := specPage(0x1d0f, "", "", "", []byte("xvdf\x00\x00\x00"))
	copy(nulPadded[4:24], "vol0123456789abcdef0")
	copy(nulPadded[24:64], "Amazon Elastic Block Store\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")
	tests := []struct {
		name      string
		page      []byte
		wantErr   string // substring of ParseIdentify's error
		want      ebs.Controller
		ebs       bool
		store     bool
		volumeID  string // "" expects VolumeID to fail
		devName   string // "" expects DeviceName to fail
		notEBSErr bool   // VolumeID's error wraps ErrNotEBS
	}{
		{
			name: "EBS volume, spec offsets",
			page: specPage(0x1d0f, "vol0123456789abcdef0", "Amazon Elastic Block Store", "2.0", []byte("sdf"+strings.Repeat(" ", 29))),
			want: ebs.Controller{VendorID: 0x1d0f, SubsystemVendorID: 0x1d0f, Serial: "vol0123456789abcdef0",
				Model: "Amazon Elastic Block Store", Firmware: "2.0", BlockDevice: "sdf"},
			ebs: true, volumeID: "vol-0123456789abcdef0", devName: "sdf",
		},
		{
			name: "EBS volume, /dev/ prefix stripped",
			page: ebstest.EBSVolume("vol-0abcdef0123456789", "/dev/xvdba"),
			want: ebs.Controller{VendorID: 0x1d0f, SubsystemVendorID: 0x1d0f, Serial: "vol0abcdef0123456789",
				Model: "Amazon Elastic Block Store", Firmware: "2.0", BlockDevice: "/dev/xvdba"},
			ebs: true, volumeID: "vol-0abcdef0123456789", devName: "xvdba",
		},
		{
			name: "EBS root volume sda1",
			page: ebstest.EBSVolume("vol-0abcdef0123456789", "sda1"),
			want: ebs.Controller{VendorID: 0x1d0f, SubsystemVendorID: 0x1d0f, Serial: "vol0abcdef0123456789",
				Model: "Amazon Elastic Block Store", Firmware: "2.0", BlockDevice: "sda1"},
			ebs: true, volumeID: "vol-0abcdef0123456789", devName: "sda1",
		},
		{
			name: "EBS volume with an old 8-digit id",
			page: ebstest.EBSVolume("vol-1a2b3c4d", "xvdf"),
			want: ebs.Controller{VendorID: 0x1d0f, SubsystemVendorID: 0x1d0f, Serial: "vol1a2b3c4d",
				Model: "Amazon Elastic Block Store", Firmware: "2.0", BlockDevice: "xvdf"},
			ebs: true, volumeID: "vol-1a2b3c4d", devName: "xvdf",
		},
		{
			name: "NUL padding",
			page: nulPadded,
			want: ebs.Controller{VendorID: 0x1d0f, SubsystemVendorID: 0x1d0f, Serial: "vol0123456789abcdef0",
				Model: "Amazon Elastic Block Store", BlockDevice: "xvdf"},
			ebs: true, volumeID: "vol-0123456789abcdef0", devName: "xvdf",
		},
		{
			name: "EBS volume without a mapping name",
			page: ebstest.EBSVolume("vol-0abcdef0123456789", ""),
			want: ebs.Controller{VendorID: 0x1d0f, SubsystemVendorID: 0x1d0f, Serial: "vol0abcdef0123456789",
				Model: "Amazon Elastic Block Store", Firmware: "2.0"},
			ebs: true, volumeID: "vol-0abcdef0123456789",
		},
		{
			name: "EBS volume, mapping name escaping /dev",
			page: ebstest.EBSVolume("vol-0abcdef0123456789", "../../etc/passwd"),
			want: ebs.Controller{VendorID: 0x1d0f, SubsystemVendorID: 0x1d0f, Serial: "vol0abcdef0123456789",
				Model: "Amazon Elastic Block Store", Firmware: "2.0", BlockDevice: "../../etc/passwd"},
			ebs: true, volumeID: "vol-0abcdef0123456789",
		},
		{
			name: "EBS volume, mapping name shadowing a kernel name",
			page: ebstest.EBSVolume("vol-0abcdef0123456789", "nvme0n1"),
			want: ebs.Controller{VendorID: 0x1d0f, SubsystemVendorID: 0x1d0f, Serial: "vol0abcdef0123456789",
				Model: "Amazon Elastic Block Store", Firmware: "2.0", BlockDevice: "nvme0n1"},
			ebs: true, volumeID: "vol-0abcdef0123456789",
		},
		{
			name: "EBS volume, vendor area not ASCII",
			page: specPage(0x1d0f, "vol0123456789abcdef0", "Amazon Elastic Block Store", "2.0", []byte{0xff, 0xfe, 's', 'd'}),
			want: ebs.Controller{VendorID: 0x1d0f, SubsystemVendorID: 0x1d0f, Serial: "vol0123456789abcdef0",
				Model: "Amazon Elastic Block Store", Firmware: "2.0"},
			ebs: true, volumeID: "vol-0123456789abcdef0",
		},
		{
			name: "EBS model with a malformed serial",
			page: specPage(0x1d0f, "volXYZ", "Amazon Elastic Block Store", "2.0", nil),
			want: ebs.Controller{VendorID: 0x1d0f, SubsystemVendorID: 0x1d0f, Serial: "volXYZ",
				Model: "Amazon Elastic Block Store", Firmware: "2.0"},
			ebs: true,
		},
		{
			name: "instance store",
			page: ebstest.InstanceStore("AWS1234567890ABCDEF0"),
			want: ebs.Controller{VendorID: 0x1d0f, SubsystemVendorID: 0x1d0f, Serial: "AWS1234567890ABCDEF0",
				Model: "Amazon EC2 NVMe Instance Storage", Firmware: "0"},
			store: true, notEBSErr: true,
		},
		{
			name: "non-Amazon device with a vendor area that looks like a name",
			page: specPage(0x144d, "S5GXNF0R123456", "Samsung SSD 980 PRO 1TB", "5B2QGXA7", []byte("xvdf")),
			want: ebs.Controller{VendorID: 0x144d, SubsystemVendorID: 0x144d, Serial: "S5GXNF0R123456",
				Model: "Samsung SSD 980 PRO 1TB", Firmware: "5B2QGXA7"},
			notEBSErr: true,
		},
		{
			name: "EBS model from another vendor",
			page: specPage(0x1234, "vol0123456789abcdef0", "Amazon Elastic Block Store", "2.0", []byte("xvdf")),
			want: ebs.Controller{VendorID: 0x1234, SubsystemVendorID: 0x1234, Serial: "vol0123456789abcdef0",
				Model: "Amazon Elastic Block Store", Firmware: "2.0"},
			notEBSErr: true,
		},
		{name: "short buffer", page: ebstest.EBSVolume("vol-0abcdef0123456789", "xvdf")[:4095], wantErr: "4095 bytes, want 4096"},
		{name: "empty", page: nil, wantErr: "0 bytes"},
		{name: "garbage", page: garbage, wantErr: "serial number"},
		{name: "control bytes in the model", page: specPage(0x1d0f, "vol0123456789abcdef0", "Amazon\nElastic", "2.0", nil), wantErr: "model number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ebs.ParseIdentify(tt.page)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseIdentify error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseIdentify: %v", err)
			}
			if c != tt.want {
				t.Errorf("ParseIdentify = %+v, want %+v", c, tt.want)
			}
			if c.IsEBS() != tt.ebs || c.IsInstanceStore() != tt.store {
				t.Errorf("IsEBS, IsInstanceStore = %v, %v; want %v, %v", c.IsEBS(), c.IsInstanceStore(), tt.ebs, tt.store)
			}
			id, err := c.VolumeID()
			switch {
			case tt.volumeID == "" && err == nil:
				t.Errorf("VolumeID = %q, want an error", id)
			case tt.volumeID != "" && (err != nil || id != tt.volumeID):
				t.Errorf("VolumeID = %q, %v; want %q", id, err, tt.volumeID)
			}
			if tt.notEBSErr && !errors.Is(err, ebs.ErrNotEBS) {
				t.Errorf("VolumeID error %v does not wrap ErrNotEBS", err)
			}
			name, err := c.DeviceName()
			switch {
			case tt.devName == "" && err == nil:
				t.Errorf("DeviceName = %q, want an error", name)
			case tt.devName != "" && (err != nil || name != tt.devName):
				t.Errorf("DeviceName = %q, %v; want %q", name, err, tt.devName)
			}
		})
	}
}

func TestValidVolumeID(t *testing.T) {
	for id, want := range map[string]bool{
		"vol-0123456789abcdef0":  true,
		"vol-1a2b3c4d":           true,
		"vol0123456789abcdef0":   false, // a serial, not an id
		"vol-0123456789abcdef":   false, // 16 digits
		"vol-0123456789abcdef01": false, // 18 digits
		"vol-0123456789ABCDEF0":  false,
		"vol-../../etc":          false,
		"":                       false,
	} {
		if got := ebs.ValidVolumeID(id); got != want {
			t.Errorf("ValidVolumeID(%q) = %v, want %v", id, got, want)
		}
	}
}

var (
	volumeIDForm = regexp.MustCompile(`^vol-([0-9a-f]{8}|[0-9a-f]{17})$`)
	linkNameForm = regexp.MustCompile(`^[a-z][a-z0-9]*$`)
)

func FuzzParseIdentify(f *testing.F) {
	f.Add(ebstest.EBSVolume("vol-0123456789abcdef0", "xvdba"))
	f.Add(ebstest.EBSVolume("vol-1a2b3c4d", "/dev/sdf"))
	f.Add(ebstest.InstanceStore("AWS1234567890ABCDEF0"))
	f.Add(specPage(0x144d, "S5GXNF0R123456", "Samsung SSD 980 PRO 1TB", "5B2QGXA7", nil))
	f.Add(make([]byte, 4096))
	f.Add([]byte("vol"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ebs.ParseIdentify(b)
		if err != nil {
			return
		}
		for _, s := range []string{c.Serial, c.Model, c.Firmware, c.BlockDevice} {
			for i := 0; i < len(s); i++ {
				if s[i] < 0x20 || s[i] > 0x7e {
					t.Fatalf("field %q holds a non-printable byte", s)
				}
			}
			if strings.HasSuffix(s, " ") {
				t.Fatalf("field %q keeps its padding", s)
			}
		}
		if !c.IsEBS() && c.BlockDevice != "" {
			t.Fatalf("non-EBS controller %+v has a block device", c)
		}
		if id, err := c.VolumeID(); err == nil && (!volumeIDForm.MatchString(id) || !ebs.ValidVolumeID(id)) {
			t.Fatalf("VolumeID = %q, not a volume id", id)
		}
		if name, err := c.DeviceName(); err == nil && !linkNameForm.MatchString(name) {
			t.Fatalf("DeviceName = %q, not safe as a file name under /dev", name)
		}
		// Encoding what was parsed and parsing it again changes nothing.
		again, err := ebs.ParseIdentify(ebstest.Identify(c))
		if err != nil || again != c {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, c)
		}
	})
}
