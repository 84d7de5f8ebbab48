// Package ebstest builds NVMe Identify Controller and EBS statistics log
// page fixtures byte by byte, following the layouts package ebs parses, and
// serves them through a fake device table in place of the ioctl. Tests of
// ebs and of its users (the CSI node service) use it; no product code does.
package ebstest

import (
	"context"
	"encoding/binary"
	"fmt"
	"io/fs"
	"strings"
	"sync"

	"github.com/autonode/autonode/agent/storage/ebs"
)

// Identify encodes c as Identify Controller data (NVMe base specification,
// CNS 01h): VID at 0, SSVID at 2, serial at 4 (20 bytes), model at 24 (40),
// firmware at 64 (8), ASCII fields space padded; BlockDevice goes in the
// first 32 bytes of the vendor-specific area at 3072, space padded, as EBS
// writes it. Fields longer than their slot are cut.
func Identify(c ebs.Controller) []byte {
	b := make([]byte, ebs.IdentifySize)
	binary.LittleEndian.PutUint16(b[0:], c.VendorID)
	binary.LittleEndian.PutUint16(b[2:], c.SubsystemVendorID)
	pad(b[4:24], c.Serial)
	pad(b[24:64], c.Model)
	pad(b[64:72], c.Firmware)
	pad(b[3072:3104], c.BlockDevice)
	// Bytes the parser must ignore: the rest of the controller data.
	b[72] = 0x04   // RAB
	b[256] = 0x06  // OACS
	b[2048] = 0xff // first power state descriptor
	return b
}

// EBSVolume returns the Identify data of EBS volume volumeID ("vol-0abc…")
// attached under the block-device mapping name deviceName ("xvdba",
// "/dev/sdf", or "" for none).
func EBSVolume(volumeID, deviceName string) []byte {
	return Identify(ebs.Controller{
		VendorID:          ebs.AmazonVendorID,
		SubsystemVendorID: ebs.AmazonVendorID,
		Serial:            strings.Replace(volumeID, "vol-", "vol", 1),
		Model:             ebs.ModelEBS,
		Firmware:          "2.0",
		BlockDevice:       deviceName,
	})
}

// InstanceStore returns the Identify data of an instance-store disk.
func InstanceStore(serial string) []byte {
	return Identify(ebs.Controller{
		VendorID:          ebs.AmazonVendorID,
		SubsystemVendorID: ebs.AmazonVendorID,
		Serial:            serial,
		Model:             ebs.ModelInstanceStore,
		Firmware:          "0",
	})
}

// Stats encodes s as the EBS statistics log page: magic 0x3C23B510 and the
// version at 0, the eleven counters from 8, the read and write latency
// histograms at 512 and 2056 (u64 bin count, then 24-byte bins).
func Stats(s ebs.Stats) []byte {
	b := make([]byte, ebs.StatsLogPageSize)
	le := binary.LittleEndian
	le.PutUint32(b[0:], 0x3C23B510)
	le.PutUint32(b[4:], s.Version)
	for i, v := range []uint64{s.ReadOps, s.WriteOps, s.ReadBytes, s.WriteBytes, s.ReadTimeMicros, s.WriteTimeMicros,
		s.VolumeExceededIOPSMicros, s.VolumeExceededThroughputMicros, s.InstanceExceededIOPSMicros,
		s.InstanceExceededThroughputMicros, s.QueueLength} {
		le.PutUint64(b[8+8*i:], v)
	}
	putHistogram(b[512:2056], s.ReadLatency)
	putHistogram(b[2056:3600], s.WriteLatency)
	return b
}

func putHistogram(b []byte, bins []ebs.HistogramBin) {
	bins = bins[:min(len(bins), 64)]
	binary.LittleEndian.PutUint64(b, uint64(len(bins)))
	for i, bin := range bins {
		p := b[8+24*i:]
		binary.LittleEndian.PutUint64(p, bin.LowerMicros)
		binary.LittleEndian.PutUint64(p[8:], bin.UpperMicros)
		binary.LittleEndian.PutUint32(p[16:], bin.Count)
	}
}

func pad(dst []byte, s string) {
	for i := range dst {
		dst[i] = ' '
	}
	copy(dst, s)
}

// Devices is a fake device table keyed by device path: it implements
// ebs.Identifier and ebs.StatsReader from fixtures. Set and Remove play
// attachments and detachments; Set on a path in use plays a reattachment
// that reuses a kernel name. A path with no entry answers an error wrapping fs.ErrNotExist, as a
// detached device does. Safe for concurrent use.
type Devices struct {
	mu       sync.Mutex
	identify map[string][]byte
	stats    map[string][]byte
	calls    map[string]int
}

// NewDevices returns an empty table.
func NewDevices() *Devices {
	return &Devices{identify: map[string][]byte{}, stats: map[string][]byte{}, calls: map[string]int{}}
}

// Set makes path answer identify (and stats, when not nil).
func (d *Devices) Set(path string, identify, stats []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.identify[path] = identify
	if stats != nil {
		d.stats[path] = stats
	} else {
		delete(d.stats, path)
	}
}

// Remove detaches path.
func (d *Devices) Remove(path string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.identify, path)
	delete(d.stats, path)
}

// IdentifyCalls returns how often path was identified.
func (d *Devices) IdentifyCalls(path string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.calls[path]
}

// IdentifyController implements ebs.Identifier.
func (d *Devices) IdentifyController(ctx context.Context, path string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls[path]++
	b, ok := d.identify[path]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
	}
	return append([]byte(nil), b...), nil
}

// StatsLogPage implements ebs.StatsReader.
func (d *Devices) StatsLogPage(ctx context.Context, path string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	b, ok := d.stats[path]
	if !ok {
		if _, attached := d.identify[path]; attached {
			return nil, fmt.Errorf("%s: NVMe admin command 0x2 failed with status 0x4002", path)
		}
		return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
	}
	return append([]byte(nil), b...), nil
}
