package diagnostics

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/autonode/autonode/sandbox/privileged"
)

func TestParseKmsgRecord(t *testing.T) {
	tests := []struct {
		name, rec string
		want      KmsgRecord
		ok        bool
	}{
		{"plain", "6,339,5140900,-;NET: Registered protocol family 10\n",
			KmsgRecord{Facility: 0, Level: 6, Seq: 339, Usec: 5140900, Message: "NET: Registered protocol family 10"}, true},
		{"dictionary", "3,2,2500000,-;nvme nvme0: timeout\n SUBSYSTEM=nvme\n DEVICE=c259:0\n",
			KmsgRecord{Level: 3, Seq: 2, Usec: 2500000, Message: "nvme nvme0: timeout", Dict: []string{"SUBSYSTEM=nvme", "DEVICE=c259:0"}}, true},
		{"facility and extra fields", "30,7,10,c,caller=T1;systemd[1]: hi",
			KmsgRecord{Facility: 3, Level: 6, Seq: 7, Usec: 10, Message: "systemd[1]: hi"}, true},
		{"empty message", "4,1,1,-;", KmsgRecord{Level: 4, Seq: 1, Usec: 1}, true},
		{"no separator", "6,1,1,- no semicolon", KmsgRecord{}, false},
		{"short header", "6,1;msg", KmsgRecord{}, false},
		{"bad prio", "x,1,1,-;msg", KmsgRecord{}, false},
		{"negative ts", "6,1,-1,-;msg", KmsgRecord{}, false},
		{"empty", "", KmsgRecord{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseKmsgRecord(tc.rec)
			if (err == nil) != tc.ok {
				t.Fatalf("err %v, want ok=%v", err, tc.ok)
			}
			if tc.ok && (got.Facility != tc.want.Facility || got.Level != tc.want.Level || got.Seq != tc.want.Seq ||
				got.Usec != tc.want.Usec || got.Message != tc.want.Message || !slices.Equal(got.Dict, tc.want.Dict)) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	if s := (KmsgRecord{Level: 3, Usec: 2500001, Message: "m"}).String(); s != "[    2.500001] err: m" {
		t.Fatalf("String() = %q", s)
	}
}

func FuzzParseKmsgRecord(f *testing.F) {
	f.Add("6,339,5140900,-;NET: Registered protocol family 10\n")
	f.Add("3,2,2500000,-;nvme nvme0: timeout\n SUBSYSTEM=nvme\n DEVICE=c259:0\n")
	f.Add("4294967295,18446744073709551615,18446744073709551615,-;\\x00")
	f.Fuzz(func(t *testing.T, rec string) {
		r, err := ParseKmsgRecord(rec)
		if err != nil {
			return
		}
		if r.Level < 0 || r.Level > 7 || strings.Contains(r.Message, "\n") {
			t.Fatalf("parsed %q into %+v", rec, r)
		}
		_ = r.String()
	})
}

func TestSnapshotKmsgFile(t *testing.T) {
	got, err := snapshotKmsg(context.Background(), writeKmsgFixture(t), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	want := "[    0.001000] info: Linux version 6.18 (fixture)\n[    2.500000] err: nvme nvme0: I/O 12 QID 3 timeout, aborting\n"
	if string(got) != want {
		t.Fatalf("snapshot:\n%s\nwant:\n%s", got, want)
	}
	got, err = snapshotKmsg(context.Background(), writeKmsgFixture(t), 60)
	if err != nil || !strings.Contains(string(got), "truncated") || strings.Contains(string(got), "nvme") {
		t.Fatalf("capped snapshot: %q, %v", got, err)
	}
}

// TestPrivilegedSnapshotDevKmsg reads the real /dev/kmsg: it must return
// what the ring buffer holds now and not wait for more.
func TestPrivilegedSnapshotDevKmsg(t *testing.T) {
	privileged.Require(t, privileged.Root)
	got, err := snapshotKmsg(context.Background(), DefaultKmsgPath, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(strings.TrimSpace(string(got)), "\n") {
		if line != "" && !strings.HasPrefix(line, "[") {
			t.Fatalf("unformatted kernel log line %q", line)
		}
	}
}
