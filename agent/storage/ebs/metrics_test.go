package ebs_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/autonode/autonode/agent/storage/ebs"
	"github.com/autonode/autonode/agent/storage/ebs/ebstest"
)

func TestMetrics(t *testing.T) {
	tr := newTree(t)
	a := tr.attach(t, "nvme1n1", ebstest.EBSVolume(volA, "xvdba"))
	tr.devices.Set(a, ebstest.EBSVolume(volA, "xvdba"), ebstest.Stats(sampleStats))
	// B answers no statistics page: it is reported down, the rest is served.
	tr.attach(t, "nvme2n1", ebstest.EBSVolume(volB, "xvdbb"))
	tr.attach(t, "nvme3n1", ebstest.InstanceStore("AWS1234567890ABCDEF0"))
	m := ebs.NewMetrics(ebs.MetricsOptions{Volumes: tr.loc, Stats: tr.devices, Logger: testLogger(t)})
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(m); err != nil {
		t.Fatal(err)
	}
	const want = `
# HELP autonode_ebs_instance_performance_exceeded_iops_seconds_total Time the EBS IOPS demand exceeded the instance's EBS IOPS limit.
# TYPE autonode_ebs_instance_performance_exceeded_iops_seconds_total counter
autonode_ebs_instance_performance_exceeded_iops_seconds_total{device="nvme1n1",volume_id="vol-0aaaaaaaaaaaaaaaa"} 0.000109
# HELP autonode_ebs_instance_performance_exceeded_throughput_seconds_total Time the EBS throughput demand exceeded the instance's EBS throughput limit.
# TYPE autonode_ebs_instance_performance_exceeded_throughput_seconds_total counter
autonode_ebs_instance_performance_exceeded_throughput_seconds_total{device="nvme1n1",volume_id="vol-0aaaaaaaaaaaaaaaa"} 0.00011
# HELP autonode_ebs_read_bytes_total Bytes read.
# TYPE autonode_ebs_read_bytes_total counter
autonode_ebs_read_bytes_total{device="nvme1n1",volume_id="vol-0aaaaaaaaaaaaaaaa"} 1.08003328e+08
# HELP autonode_ebs_read_latency_seconds Read latency histogram kept by the device (bucket bounds are the device's; the sum is the total read time).
# TYPE autonode_ebs_read_latency_seconds histogram
autonode_ebs_read_latency_seconds_bucket{device="nvme1n1",volume_id="vol-0aaaaaaaaaaaaaaaa",le="0.000128"} 40
autonode_ebs_read_latency_seconds_bucket{device="nvme1n1",volume_id="vol-0aaaaaaaaaaaaaaaa",le="0.000256"} 90
autonode_ebs_read_latency_seconds_bucket{device="nvme1n1",volume_id="vol-0aaaaaaaaaaaaaaaa",le="0.000512"} 101
autonode_ebs_read_latency_seconds_bucket{device="nvme1n1",volume_id="vol-0aaaaaaaaaaaaaaaa",le="+Inf"} 101
autonode_ebs_read_latency_seconds_sum{device="nvme1n1",volume_id="vol-0aaaaaaaaaaaaaaaa"} 0.105
autonode_ebs_read_latency_seconds_count{device="nvme1n1",volume_id="vol-0aaaaaaaaaaaaaaaa"} 101
# HELP autonode_ebs_read_ops_total Completed read operations.
# TYPE autonode_ebs_read_ops_total counter
autonode_ebs_read_ops_total{device="nvme1n1",volume_id="vol-0aaaaaaaaaaaaaaaa"} 101
# HELP autonode_ebs_read_seconds_total Time spent by all completed read operations.
# TYPE autonode_ebs_read_seconds_total counter
autonode_ebs_read_seconds_total{device="nvme1n1",volume_id="vol-0aaaaaaaaaaaaaaaa"} 0.105
# HELP autonode_ebs_stats_list_errors_total Scrapes that could not list the attached EBS volumes.
# TYPE autonode_ebs_stats_list_errors_total counter
autonode_ebs_stats_list_errors_total 0
# HELP autonode_ebs_stats_up 1 when the volume's EBS statistics log page was read at this scrape, 0 when reading it failed.
# TYPE autonode_ebs_stats_up gauge
autonode_ebs_stats_up{device="nvme1n1",volume_id="vol-0aaaaaaaaaaaaaaaa"} 1
autonode_ebs_stats_up{device="nvme2n1",volume_id="vol-0bbbbbbbbbbbbbbbb"} 0
# HELP autonode_ebs_volume_performance_exceeded_iops_seconds_total Time the IOPS demand exceeded the volume's provisioned IOPS.
# TYPE autonode_ebs_volume_performance_exceeded_iops_seconds_total counter
autonode_ebs_volume_performance_exceeded_iops_seconds_total{device="nvme1n1",volume_id="vol-0aaaaaaaaaaaaaaaa"} 0.000107
# HELP autonode_ebs_volume_performance_exceeded_throughput_seconds_total Time the throughput demand exceeded the volume's provisioned throughput.
# TYPE autonode_ebs_volume_performance_exceeded_throughput_seconds_total counter
autonode_ebs_volume_performance_exceeded_throughput_seconds_total{device="nvme1n1",volume_id="vol-0aaaaaaaaaaaaaaaa"} 0.000108
# HELP autonode_ebs_volume_queue_length Operations waiting to complete when the page was read.
# TYPE autonode_ebs_volume_queue_length gauge
autonode_ebs_volume_queue_length{device="nvme1n1",volume_id="vol-0aaaaaaaaaaaaaaaa"} 3
`
	names := []string{
		"autonode_ebs_instance_performance_exceeded_iops_seconds_total",
		"autonode_ebs_instance_performance_exceeded_throughput_seconds_total",
		"autonode_ebs_read_bytes_total", "autonode_ebs_read_latency_seconds", "autonode_ebs_read_ops_total",
		"autonode_ebs_read_seconds_total", "autonode_ebs_stats_list_errors_total", "autonode_ebs_stats_up",
		"autonode_ebs_volume_performance_exceeded_iops_seconds_total",
		"autonode_ebs_volume_performance_exceeded_throughput_seconds_total", "autonode_ebs_volume_queue_length",
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	// The write side is exported too.
	if n, err := testutil.GatherAndCount(reg, "autonode_ebs_write_ops_total", "autonode_ebs_write_bytes_total",
		"autonode_ebs_write_seconds_total", "autonode_ebs_write_latency_seconds"); err != nil || n != 4 {
		t.Errorf("write metrics: %d series, %v; want 4", n, err)
	}
}

type failingLister struct{}

func (failingLister) Volumes(context.Context) ([]ebs.Volume, error) {
	return nil, errors.New("listing NVMe devices: permission denied")
}

func TestMetricsListError(t *testing.T) {
	m := ebs.NewMetrics(ebs.MetricsOptions{Volumes: failingLister{}, Stats: ebstest.NewDevices(), Logger: testLogger(t)})
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(m); err != nil {
		t.Fatal(err)
	}
	// The scrape succeeds with the error counted, so the agent's other
	// metrics are still served.
	for range 2 {
		if _, err := reg.Gather(); err != nil {
			t.Fatal(err)
		}
	}
	const want = `
# HELP autonode_ebs_stats_list_errors_total Scrapes that could not list the attached EBS volumes.
# TYPE autonode_ebs_stats_list_errors_total counter
autonode_ebs_stats_list_errors_total 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "autonode_ebs_stats_list_errors_total"); err != nil {
		t.Error(err)
	}
}
