package ebs_test

import (
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/autonode/autonode/agent/storage/ebs"
	"github.com/autonode/autonode/agent/storage/ebs/ebstest"
)

// sampleStats has a distinct value in every field, so a field read from
// the wrong offset shows.
var sampleStats = ebs.Stats{
	Version:                          1,
	ReadOps:                          101,
	WriteOps:                         102,
	ReadBytes:                        103 << 20,
	WriteBytes:                       104 << 20,
	ReadTimeMicros:                   105_000,
	WriteTimeMicros:                  106_000,
	VolumeExceededIOPSMicros:         107,
	VolumeExceededThroughputMicros:   108,
	InstanceExceededIOPSMicros:       109,
	InstanceExceededThroughputMicros: 110,
	QueueLength:                      3,
	ReadLatency: []ebs.HistogramBin{
		{LowerMicros: 0, UpperMicros: 128, Count: 40},
		{LowerMicros: 128, UpperMicros: 256, Count: 50},
		{LowerMicros: 256, UpperMicros: 512, Count: 11},
	},
	WriteLatency: []ebs.HistogramBin{
		{LowerMicros: 0, UpperMicros: 256, Count: 100},
		{LowerMicros: 256, UpperMicros: 1024, Count: 2},
	},
}

// specStatsPage lays out a page by hand at the offsets of the published
// layout, independently of ebstest's builder.
func specStatsPage() []byte {
	b := make([]byte, 4096)
	le := binary.LittleEndian
	le.PutUint32(b[0:], 0x3C23B510)
	le.PutUint32(b[4:], 1)
	le.PutUint64(b[8:], 101)      // total_read_ops
	le.PutUint64(b[16:], 102)     // total_write_ops
	le.PutUint64(b[24:], 103<<20) // total_read_bytes
	le.PutUint64(b[32:], 104<<20) // total_write_bytes
	le.PutUint64(b[40:], 105_000) // total_read_time
	le.PutUint64(b[48:], 106_000) // total_write_time
	le.PutUint64(b[56:], 107)     // ebs_volume_performance_exceeded_iops
	le.PutUint64(b[64:], 108)     // ebs_volume_performance_exceeded_tp
	le.PutUint64(b[72:], 109)     // ec2_instance_ebs_performance_exceeded_iops
	le.PutUint64(b[80:], 110)     // ec2_instance_ebs_performance_exceeded_tp
	le.PutUint64(b[88:], 3)       // volume_queue_length
	le.PutUint64(b[512:], 3)      // read histogram num_bins
	for i, bin := range [][3]uint64{{0, 128, 40}, {128, 256, 50}, {256, 512, 11}} {
		p := b[520+24*i:]
		le.PutUint64(p, bin[0])
		le.PutUint64(p[8:], bin[1])
		le.PutUint32(p[16:], uint32(bin[2]))
		le.PutUint32(p[20:], 0xdeadbeef) // reserved
	}
	le.PutUint64(b[2056:], 2) // write histogram num_bins
	for i, bin := range [][3]uint64{{0, 256, 100}, {256, 1024, 2}} {
		p := b[2064+24*i:]
		le.PutUint64(p, bin[0])
		le.PutUint64(p[8:], bin[1])
		le.PutUint32(p[16:], uint32(bin[2]))
	}
	b[300] = 0xff  // reserved1
	b[3600] = 0x08 // num_of_hists, instance store only
	return b
}

func TestParseStatsLogPage(t *testing.T) {
	localStorage := specStatsPage()
	binary.LittleEndian.PutUint32(localStorage, 0xEC2C0D7E)
	tooManyBins := specStatsPage()
	binary.LittleEndian.PutUint64(tooManyBins[2056:], 65)
	maxBins := specStatsPage()
	binary.LittleEndian.PutUint64(maxBins[512:], 64)
	tests := []struct {
		name    string
		page    []byte
		want    *ebs.Stats
		wantErr string
		notEBS  bool
	}{
		{name: "spec offsets", page: specStatsPage(), want: &sampleStats},
		{name: "builder", page: ebstest.Stats(sampleStats), want: &sampleStats},
		{name: "longer page", page: append(specStatsPage(), make([]byte, 4096)...), want: &sampleStats},
		{name: "64 bins", page: maxBins},
		{name: "short", page: specStatsPage()[:4095], wantErr: "4095 bytes, want 4096"},
		{name: "instance store magic", page: localStorage, wantErr: "magic 0xec2c0d7e", notEBS: true},
		{name: "zeros", page: make([]byte, 4096), wantErr: "magic 0x000000", notEBS: true},
		{name: "too many bins", page: tooManyBins, wantErr: "write latency histogram: 65 bins"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ebs.ParseStatsLogPage(tt.page)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				if errors.Is(err, ebs.ErrNotEBS) != tt.notEBS {
					t.Errorf("errors.Is(%v, ErrNotEBS) = %v, want %v", err, !tt.notEBS, tt.notEBS)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.want != nil && !reflect.DeepEqual(s, *tt.want) {
				t.Errorf("ParseStatsLogPage =\n%+v\nwant\n%+v", s, *tt.want)
			}
		})
	}
}

func FuzzParseStatsLogPage(f *testing.F) {
	f.Add(specStatsPage())
	f.Add(ebstest.Stats(ebs.Stats{}))
	f.Add(make([]byte, 4096))
	f.Add([]byte{0x10, 0xb5, 0x23, 0x3c})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ebs.ParseStatsLogPage(b)
		if err != nil {
			return
		}
		if len(s.ReadLatency) > 64 || len(s.WriteLatency) > 64 {
			t.Fatalf("%d and %d bins, at most 64 fit", len(s.ReadLatency), len(s.WriteLatency))
		}
		again, err := ebs.ParseStatsLogPage(ebstest.Stats(s))
		if err != nil || !reflect.DeepEqual(again, s) {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, s)
		}
	})
}
