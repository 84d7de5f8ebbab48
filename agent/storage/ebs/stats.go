package ebs

import (
	"encoding/binary"
	"fmt"
)

// The EBS statistics log page (Get Log Page, log identifier 0xD0, namespace
// 1, 4096 bytes), all fields little endian. The layout is the one published
// in two public tools:
//   - amazon-ec2-utils, script `ebsnvme` (class
//     nvme_get_amzn_stats_logpage), github.com/amazonlinux/amazon-ec2-utils;
//   - nvme-cli, plugins/amzn/amzn-nvme.c (struct amzn_latency_log_page_base),
//     github.com/linux-nvme/nvme-cli;
//
// and the units (microseconds) are those of the CloudWatch agent's EBS NVMe
// metrics documentation ("Collect Amazon EBS NVMe driver metrics").
//
//	offset  size  field
//	     0     4  magic 0x3C23B510
//	     4     4  version (reserved in ebsnvme)
//	     8  11×8  total_read_ops, total_write_ops, total_read_bytes,
//	              total_write_bytes, total_read_time, total_write_time,
//	              ebs_volume_performance_exceeded_iops, …_tp,
//	              ec2_instance_ebs_performance_exceeded_iops, …_tp,
//	              volume_queue_length (point in time, not cumulative)
//	    96   416  reserved
//	   512  1544  read latency histogram: u64 num_bins, then 64 bins of
//	              {u64 lower, u64 upper, u32 count, u32 reserved}
//	  2056  1544  write latency histogram, the same
//	  3600   496  per-I/O-size histogram metadata (instance store), reserved
const (
	// StatsLogPageID is the log identifier of the EBS statistics page.
	StatsLogPageID = 0xD0
	// StatsLogPageSize is the length this package reads and parses.
	StatsLogPageSize = 4096
	// statsMagic marks an EBS statistics page. Instance-store disks answer
	// the same log page with magic 0xEC2C0D7E (nvme-cli), which this
	// package does not read.
	statsMagic = 0x3C23B510

	offCounters       = 8
	numCounters       = 11
	offReadHistogram  = 512
	offWriteHistogram = 2056
	histogramBins     = 64
	histogramBinSize  = 24
)

// Stats is the EBS statistics log page of one volume. Times are in
// microseconds, as the device reports them; counters are cumulative since
// the volume was attached.
type Stats struct {
	Version    uint32
	ReadOps    uint64
	WriteOps   uint64
	ReadBytes  uint64
	WriteBytes uint64
	// ReadTimeMicros and WriteTimeMicros add up the latency of every
	// completed operation.
	ReadTimeMicros  uint64
	WriteTimeMicros uint64
	// The throttling counters: how long demand exceeded the volume's
	// provisioned IOPS or throughput, or the instance's EBS IOPS or
	// throughput limit.
	VolumeExceededIOPSMicros         uint64
	VolumeExceededThroughputMicros   uint64
	InstanceExceededIOPSMicros       uint64
	InstanceExceededThroughputMicros uint64
	// QueueLength is the volume's queue length when the page was read.
	QueueLength uint64
	// ReadLatency and WriteLatency are the latency histograms, as many bins
	// as the device filled.
	ReadLatency  []HistogramBin
	WriteLatency []HistogramBin
}

// HistogramBin counts operations whose latency fell in [Lower, Upper)
// microseconds.
type HistogramBin struct {
	LowerMicros uint64
	UpperMicros uint64
	Count       uint32
}

// ParseStatsLogPage parses the EBS statistics log page. It fails on a short
// page, a wrong magic number (not an EBS volume) and a histogram that claims
// more bins than the page holds.
func ParseStatsLogPage(b []byte) (Stats, error) {
	if len(b) < StatsLogPageSize {
		return Stats{}, fmt.Errorf("EBS statistics log page: %d bytes, want %d", len(b), StatsLogPageSize)
	}
	le := binary.LittleEndian
	if m := le.Uint32(b); m != statsMagic {
		return Stats{}, fmt.Errorf("EBS statistics log page: magic %#08x, want %#08x: %w", m, statsMagic, ErrNotEBS)
	}
	var c [numCounters]uint64
	for i := range c {
		c[i] = le.Uint64(b[offCounters+8*i:])
	}
	s := Stats{
		Version:                          le.Uint32(b[4:]),
		ReadOps:                          c[0],
		WriteOps:                         c[1],
		ReadBytes:                        c[2],
		WriteBytes:                       c[3],
		ReadTimeMicros:                   c[4],
		WriteTimeMicros:                  c[5],
		VolumeExceededIOPSMicros:         c[6],
		VolumeExceededThroughputMicros:   c[7],
		InstanceExceededIOPSMicros:       c[8],
		InstanceExceededThroughputMicros: c[9],
		QueueLength:                      c[10],
	}
	var err error
	if s.ReadLatency, err = parseHistogram(b[offReadHistogram:]); err != nil {
		return Stats{}, fmt.Errorf("EBS statistics log page: read latency histogram: %w", err)
	}
	if s.WriteLatency, err = parseHistogram(b[offWriteHistogram:]); err != nil {
		return Stats{}, fmt.Errorf("EBS statistics log page: write latency histogram: %w", err)
	}
	return s, nil
}

func parseHistogram(b []byte) ([]HistogramBin, error) {
	le := binary.LittleEndian
	n := le.Uint64(b)
	if n > histogramBins {
		return nil, fmt.Errorf("%d bins, at most %d fit", n, histogramBins)
	}
	bins := make([]HistogramBin, n)
	for i := range bins {
		p := b[8+histogramBinSize*i:]
		bins[i] = HistogramBin{
			LowerMicros: le.Uint64(p),
			UpperMicros: le.Uint64(p[8:]),
			Count:       le.Uint32(p[16:]),
		}
	}
	return bins, nil
}
