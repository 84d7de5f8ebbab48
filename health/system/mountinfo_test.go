package system

import (
	"errors"
	"reflect"
	"testing"
)

func TestParseMountInfo(t *testing.T) {
	tests := []struct {
		line string
		want MountInfo
	}{
		{
			"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue",
			MountInfo{ID: 36, ParentID: 35, Root: "/mnt1", MountPoint: "/mnt2", Options: []string{"rw", "noatime"},
				FSType: "ext3", Source: "/dev/root", SuperOptions: []string{"rw", "errors=continue"}},
		},
		{
			"22 27 0:21 / /proc rw,relatime - proc proc rw",
			MountInfo{ID: 22, ParentID: 27, Root: "/", MountPoint: "/proc", Options: []string{"rw", "relatime"},
				FSType: "proc", Source: "proc", SuperOptions: []string{"rw"}},
		},
		{
			`100 1 8:1 / /var/lib/my\040dir ro shared:1 master:2 - xfs /dev/nvme1n1 ro,attr2`,
			MountInfo{ID: 100, ParentID: 1, Root: "/", MountPoint: "/var/lib/my dir", Options: []string{"ro"},
				FSType: "xfs", Source: "/dev/nvme1n1", SuperOptions: []string{"ro", "attr2"}},
		},
		{
			"5 1 0:5 / /x rw - tmpfs tmpfs",
			MountInfo{ID: 5, ParentID: 1, Root: "/", MountPoint: "/x", Options: []string{"rw"}, FSType: "tmpfs", Source: "tmpfs"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			got, err := ParseMountInfo(tt.line)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
	for _, bad := range []string{
		"",
		"36 35 98:0 /mnt1 /mnt2 rw",        // no separator
		"36 35 98:0 /mnt1 /mnt2 rw - ext3", // no source
		"x 35 98:0 / /mnt rw - ext3 /dev/root rw",      // bad id
		"36 y 98:0 / /mnt rw - ext3 /dev/root rw",      // bad parent
		`36 35 98:0 / /mnt\04 rw - ext3 /dev/root rw`,  // short escape
		`36 35 98:0 / /mnt\999 rw - ext3 /dev/root rw`, // bad escape
		"36 35 98:0 / relative rw - ext3 /dev/root rw", // not absolute
	} {
		if _, err := ParseMountInfo(bad); !errors.Is(err, ErrMalformedMountInfo) {
			t.Errorf("ParseMountInfo(%q) = %v, want ErrMalformedMountInfo", bad, err)
		}
	}
}

func TestContainingMount(t *testing.T) {
	mounts := []MountInfo{{ID: 1, MountPoint: "/"}, {ID: 2, MountPoint: "/var/lib"}, {ID: 3, MountPoint: "/var/lib/kubelet"},
		{ID: 4, MountPoint: "/var/lib/kubelet"}, {ID: 5, MountPoint: "/var/lib/kube"}}
	for path, want := range map[string]int{
		"/":                       1,
		"/etc":                    1,
		"/var/lib":                2,
		"/var/lib/containerd":     2,
		"/var/lib/kubelet":        4, // the top of the stack
		"/var/lib/kubelet/pods/x": 4,
		"/var/lib/kubeletx":       2, // not a prefix by path component
		"/var/lib/kube/":          5,
	} {
		if got, ok := containingMount(mounts, path); !ok || got.ID != want {
			t.Errorf("containingMount(%q) = %d, %v; want %d", path, got.ID, ok, want)
		}
	}
}

func FuzzParseMountInfo(f *testing.F) {
	for _, s := range []string{
		"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue",
		`100 1 8:1 / /var/lib/my\040dir ro shared:1 master:2 - xfs /dev/nvme1n1 ro,attr2`,
		"5 1 0:5 / /x rw - tmpfs tmpfs",
		`1 1 1 \ / - - - -`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		m, err := ParseMountInfo(line)
		if err != nil {
			if !errors.Is(err, ErrMalformedMountInfo) {
				t.Fatalf("error %v does not wrap ErrMalformedMountInfo", err)
			}
			return
		}
		if len(m.MountPoint) == 0 || m.MountPoint[0] != '/' || m.FSType == "" || len(m.Options) == 0 {
			t.Fatalf("accepted %q as %+v", line, m)
		}
		containingMount([]MountInfo{m}, m.MountPoint)
		_ = m.ReadOnly()
	})
}
