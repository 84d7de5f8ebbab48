// Package ebs finds EBS volumes among the node's NVMe devices and keeps
// stable names for them.
//
// On Nitro instances every EBS volume is an NVMe controller whose Identify
// Controller data names it: the model reads "Amazon Elastic Block Store", the
// serial number is the volume id without its dash ("vol0abc…"), and the first
// 32 bytes of the vendor-specific area hold the device name asked for in the
// block-device mapping ("sdf", "/dev/xvdba"). The kernel's own names
// (/dev/nvme1n1) follow attach order and change across reattachments, so this
// package
//
//   - parses Identify Controller data (ParseIdentify) and the EBS statistics
//     log page (ParseStatsLogPage), both pure and fuzzed;
//   - issues the two admin commands through NVME_IOCTL_ADMIN_CMD (NVMe);
//   - keeps /dev/disk/autonode/by-volume-id/vol-… and /dev/<mapping name>
//     pointing at the right /dev/nvmeNn1, and never trusts one of those links
//     without identifying its target again (Locator);
//   - exports the statistics log page as Prometheus metrics (Metrics).
package ebs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Identify Controller data structure (NVM Express Base Specification,
// "Identify Controller Data Structure", CNS 01h): the offsets this package
// reads.
const (
	// IdentifySize is the length of the Identify Controller data.
	IdentifySize = 4096

	offVID      = 0    // PCI Vendor ID, 2 bytes little endian
	offSSVID    = 2    // PCI Subsystem Vendor ID, 2 bytes
	offSN       = 4    // Serial Number, 20 ASCII bytes, space padded
	offMN       = 24   // Model Number, 40 ASCII bytes
	offFR       = 64   // Firmware Revision, 8 ASCII bytes
	offVS       = 3072 // Vendor Specific, 1024 bytes to the end
	lenSN       = 20
	lenMN       = 40
	lenFR       = 8
	lenVSBlkDev = 32 // EBS: the block-device mapping name, space padded
)

const (
	// AmazonVendorID is the PCI vendor id of Amazon's NVMe controllers.
	AmazonVendorID = 0x1D0F
	// ModelEBS is the model number of an EBS volume's controller.
	ModelEBS = "Amazon Elastic Block Store"
	// ModelInstanceStore is the model number of an instance-store disk.
	ModelInstanceStore = "Amazon EC2 NVMe Instance Storage"
)

// ErrNotEBS says a device is not an EBS volume.
var ErrNotEBS = errors.New("not an EBS volume")

// Controller is the part of the Identify Controller data that names a device.
type Controller struct {
	VendorID          uint16
	SubsystemVendorID uint16
	// Serial, Model and Firmware are the ASCII fields with their padding
	// (trailing spaces or NULs) removed.
	Serial   string
	Model    string
	Firmware string
	// BlockDevice is, for an EBS volume, the name from the block-device
	// mapping as EBS stores it in the vendor-specific area ("sdf",
	// "/dev/xvdba"). It is empty for other devices, and when the area holds
	// no printable name.
	BlockDevice string
}

// ParseIdentify parses Identify Controller data. It fails on a short buffer
// and on serial, model or firmware fields that are not printable ASCII, as the
// specification requires them to be.
func ParseIdentify(b []byte) (Controller, error) {
	if len(b) < IdentifySize {
		return Controller{}, fmt.Errorf("identify controller data: %d bytes, want %d", len(b), IdentifySize)
	}
	c := Controller{
		VendorID:          binary.LittleEndian.Uint16(b[offVID:]),
		SubsystemVendorID: binary.LittleEndian.Uint16(b[offSSVID:]),
	}
	for _, f := range []struct {
		name string
		raw  []byte
		dst  *string
	}{
		{"serial number", b[offSN : offSN+lenSN], &c.Serial},
		{"model number", b[offMN : offMN+lenMN], &c.Model},
		{"firmware revision", b[offFR : offFR+lenFR], &c.Firmware},
	} {
		s, ok := asciiField(f.raw)
		if !ok {
			return Controller{}, fmt.Errorf("identify controller data: %s %q is not printable ASCII", f.name, f.raw)
		}
		*f.dst = s
	}
	if c.IsEBS() {
		// The vendor-specific area is only EBS's to interpret. A garbled
		// name costs the /dev/<name> link, not the volume: it is still
		// found by its serial.
		if s, ok := asciiField(firstWord(b[offVS : offVS+lenVSBlkDev])); ok {
			c.BlockDevice = s
		}
	}
	return c, nil
}

// IsEBS reports whether the controller is an EBS volume.
func (c Controller) IsEBS() bool {
	return c.VendorID == AmazonVendorID && c.Model == ModelEBS
}

// IsInstanceStore reports whether the controller is an instance-store disk.
func (c Controller) IsInstanceStore() bool {
	return c.VendorID == AmazonVendorID && c.Model == ModelInstanceStore
}

// volumeSerial matches EBS serials: "vol" and the id's hex digits (8 for old
// ids, 17 for current ones), with the dash EBS leaves out.
var volumeSerial = regexp.MustCompile(`^vol-?([0-9a-f]{8}|[0-9a-f]{17})$`)

// VolumeID returns the EBS volume id ("vol-0abc…") the serial number encodes.
func (c Controller) VolumeID() (string, error) {
	if !c.IsEBS() {
		return "", fmt.Errorf("model %q, vendor %#04x: %w", c.Model, c.VendorID, ErrNotEBS)
	}
	m := volumeSerial.FindStringSubmatch(c.Serial)
	if m == nil {
		return "", fmt.Errorf("EBS serial number %q is not a volume id", c.Serial)
	}
	return "vol-" + m[1], nil
}

// ValidVolumeID reports whether id has the form of an EBS volume id.
func ValidVolumeID(id string) bool {
	return strings.HasPrefix(id, "vol-") && volumeSerial.MatchString(id)
}

// deviceName matches the names EC2 accepts in a Linux block-device mapping
// (sdf, sda1, xvdba, hdb): with the "/dev/" prefix removed, they are safe as
// a file name directly under /dev and cannot shadow a kernel name such as
// nvme0n1 or loop0.
var deviceName = regexp.MustCompile(`^(sd|xvd|hd)[a-z]{1,2}[0-9]{0,2}$`)

// DeviceName returns the block-device mapping name as the link to create
// under /dev: "sdf" stays "sdf" and "/dev/xvdba" becomes "xvdba", as the EBS
// udev rules of amazon-ec2-utils do (ebsnvme-id -u strips "/dev/"). Names that
// are not a mapping name are refused, since the bytes come from the device.
func (c Controller) DeviceName() (string, error) {
	if !c.IsEBS() {
		return "", fmt.Errorf("model %q, vendor %#04x: %w", c.Model, c.VendorID, ErrNotEBS)
	}
	if c.BlockDevice == "" {
		return "", errors.New("no block-device mapping name in the vendor-specific area")
	}
	name := strings.TrimPrefix(c.BlockDevice, "/dev/")
	if !deviceName.MatchString(name) {
		return "", fmt.Errorf("block-device mapping name %q is not a device name", c.BlockDevice)
	}
	return name, nil
}

// asciiField trims the padding (spaces and NULs) from the end of a fixed-size
// ASCII field and reports whether what is left is printable ASCII.
func asciiField(b []byte) (string, bool) {
	s := strings.TrimRight(string(b), " \x00")
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return "", false
		}
	}
	return s, true
}

// firstWord cuts b at its first space or NUL: EBS pads the name with spaces,
// and what follows is not part of it.
func firstWord(b []byte) []byte {
	for i, c := range b {
		if c == ' ' || c == 0 {
			return b[:i]
		}
	}
	return b
}
