package ebs

import (
	"cmp"
	"context"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// StatsReader reads the EBS statistics log page of a device. NVMe does it
// with the admin-command ioctl; tests feed byte fixtures.
type StatsReader interface {
	StatsLogPage(ctx context.Context, devicePath string) ([]byte, error)
}

// VolumeLister lists the attached EBS volumes; the Locator is one.
type VolumeLister interface {
	Volumes(ctx context.Context) ([]Volume, error)
}

// MetricsOptions configures Metrics.
type MetricsOptions struct {
	// Volumes lists the volumes to read, usually the agent's Locator.
	Volumes VolumeLister
	// Stats reads the log pages. Default is NVMe{}.
	Stats StatsReader
	// Timeout bounds one scrape: listing plus every volume's read.
	// Default is 5 seconds.
	Timeout time.Duration
	// Logger receives read failures. Default discards.
	Logger *slog.Logger
}

// Metrics is a prometheus.Collector that reads every attached volume's
// statistics log page at scrape time, so the numbers are as fresh as the
// scrape and nothing polls between scrapes. Counters are the device's own
// cumulative counters since attachment, with times converted to seconds.
type Metrics struct {
	volumes    VolumeLister
	stats      StatsReader
	timeout    time.Duration
	log        *slog.Logger
	listErrors prometheus.Counter
}

// NewMetrics returns the collector; register it on the agent's registry.
func NewMetrics(opts MetricsOptions) *Metrics {
	if opts.Stats == nil {
		opts.Stats = NVMe{}
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Metrics{
		volumes: opts.Volumes,
		stats:   opts.Stats,
		timeout: opts.Timeout,
		log:     opts.Logger,
		listErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "autonode_ebs_stats_list_errors_total",
			Help: "Scrapes that could not list the attached EBS volumes.",
		}),
	}
}

// volumeDesc describes a per-volume metric, labelled volume_id and device.
func volumeDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc("autonode_ebs_"+name, help, []string{"volume_id", "device"}, nil)
}

var (
	descUp                 = volumeDesc("stats_up", "1 when the volume's EBS statistics log page was read at this scrape, 0 when reading it failed.")
	descReadOps            = volumeDesc("read_ops_total", "Completed read operations.")
	descWriteOps           = volumeDesc("write_ops_total", "Completed write operations.")
	descReadBytes          = volumeDesc("read_bytes_total", "Bytes read.")
	descWriteBytes         = volumeDesc("write_bytes_total", "Bytes written.")
	descReadTime           = volumeDesc("read_seconds_total", "Time spent by all completed read operations.")
	descWriteTime          = volumeDesc("write_seconds_total", "Time spent by all completed write operations.")
	descVolumeIOPS         = volumeDesc("volume_performance_exceeded_iops_seconds_total", "Time the IOPS demand exceeded the volume's provisioned IOPS.")
	descVolumeThroughput   = volumeDesc("volume_performance_exceeded_throughput_seconds_total", "Time the throughput demand exceeded the volume's provisioned throughput.")
	descInstanceIOPS       = volumeDesc("instance_performance_exceeded_iops_seconds_total", "Time the EBS IOPS demand exceeded the instance's EBS IOPS limit.")
	descInstanceThroughput = volumeDesc("instance_performance_exceeded_throughput_seconds_total", "Time the EBS throughput demand exceeded the instance's EBS throughput limit.")
	descQueueLength        = volumeDesc("volume_queue_length", "Operations waiting to complete when the page was read.")
	descReadLatency        = volumeDesc("read_latency_seconds", "Read latency histogram kept by the device (bucket bounds are the device's; the sum is the total read time).")
	descWriteLatency       = volumeDesc("write_latency_seconds", "Write latency histogram kept by the device (bucket bounds are the device's; the sum is the total write time).")
)

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUp, descReadOps, descWriteOps, descReadBytes, descWriteBytes, descReadTime, descWriteTime,
		descVolumeIOPS, descVolumeThroughput, descInstanceIOPS, descInstanceThroughput, descQueueLength, descReadLatency, descWriteLatency} {
		ch <- d
	}
	m.listErrors.Describe(ch)
}

// Collect implements prometheus.Collector: it lists the volumes and reads
// their pages in parallel, all within the timeout.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	defer m.listErrors.Collect(ch)
	ctx, cancel := context.WithTimeout(context.Background(), m.timeout)
	defer cancel()
	vols, err := m.volumes.Volumes(ctx)
	if err != nil {
		m.listErrors.Inc()
		m.log.Error("listing EBS volumes for metrics", "err", err)
		return
	}
	var wg sync.WaitGroup
	for _, v := range vols {
		wg.Go(func() { m.collectVolume(ctx, ch, v) })
	}
	wg.Wait()
}

func (m *Metrics) collectVolume(ctx context.Context, ch chan<- prometheus.Metric, v Volume) {
	labels := []string{v.ID, filepath.Base(v.Device)}
	page, err := m.stats.StatsLogPage(ctx, v.Device)
	var s Stats
	if err == nil {
		s, err = ParseStatsLogPage(page)
	}
	if err != nil {
		m.log.Warn("reading EBS statistics", "volume", v.ID, "device", v.Device, "err", err)
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 0, labels...)
		return
	}
	ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 1, labels...)
	for _, c := range []struct {
		desc *prometheus.Desc
		v    float64
	}{
		{descReadOps, float64(s.ReadOps)},
		{descWriteOps, float64(s.WriteOps)},
		{descReadBytes, float64(s.ReadBytes)},
		{descWriteBytes, float64(s.WriteBytes)},
		{descReadTime, micros(s.ReadTimeMicros)},
		{descWriteTime, micros(s.WriteTimeMicros)},
		{descVolumeIOPS, micros(s.VolumeExceededIOPSMicros)},
		{descVolumeThroughput, micros(s.VolumeExceededThroughputMicros)},
		{descInstanceIOPS, micros(s.InstanceExceededIOPSMicros)},
		{descInstanceThroughput, micros(s.InstanceExceededThroughputMicros)},
	} {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, c.v, labels...)
	}
	ch <- prometheus.MustNewConstMetric(descQueueLength, prometheus.GaugeValue, float64(s.QueueLength), labels...)
	ch <- latencyHistogram(descReadLatency, s.ReadLatency, s.ReadTimeMicros, labels)
	ch <- latencyHistogram(descWriteLatency, s.WriteLatency, s.WriteTimeMicros, labels)
}

// latencyHistogram turns the device's bins into cumulative Prometheus
// buckets keyed by each bin's upper bound, in seconds.
func latencyHistogram(desc *prometheus.Desc, bins []HistogramBin, sumMicros uint64, labels []string) prometheus.Metric {
	sorted := slices.Clone(bins)
	slices.SortFunc(sorted, func(a, b HistogramBin) int { return cmp.Compare(a.UpperMicros, b.UpperMicros) })
	buckets := make(map[float64]uint64, len(sorted))
	var count uint64
	for _, b := range sorted {
		count += uint64(b.Count)
		buckets[micros(b.UpperMicros)] = count
	}
	return prometheus.MustNewConstHistogram(desc, count, micros(sumMicros), buckets, labels...)
}

func micros(v uint64) float64 { return float64(v) / 1e6 }
