package instancestore

import (
	"testing"
)

func TestParseBlkid(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Signature
		err  bool
	}{
		{"xfs", "DEVNAME=/dev/loop3\nUUID=0b6c\nBLOCK_SIZE=512\nTYPE=xfs\nLABEL=autonode-eph\nUSAGE=filesystem\n",
			Signature{Type: "xfs", Label: "autonode-eph", UUID: "0b6c"}, false},
		// Captured from blkid 2.38 on an ext4 labelled `a b$"x`.
		{"escaped label", "DEVNAME=/tmp/lbl.img\nLABEL=a\\ b\\$\\\"x\nUUID=fd5c\nVERSION=1.0\nTYPE=ext4\n",
			Signature{Type: "ext4", Label: `a b$"x`, UUID: "fd5c"}, false},
		{"md member", "DEVNAME=/dev/nvme1n1\nUUID=5f1e\nUUID_SUB=77aa\nLABEL=ip-10-0-0-1:ephemeral\nTYPE=linux_raid_member\nUSAGE=raid\n",
			Signature{Type: "linux_raid_member", Label: "ip-10-0-0-1:ephemeral", UUID: "5f1e"}, false},
		{"partition table", "DEVNAME=/dev/nvme1n1\nPTUUID=1234\nPTTYPE=gpt\n", Signature{PTType: "gpt"}, false},
		{"empty", "", Signature{}, false},
		{"trailing backslash", "LABEL=x\\\n", Signature{Label: `x\`}, false},
		{"not key=value", "DEVNAME=/dev/x\ngarbage\n", Signature{}, true},
		{"empty key", "=value\n", Signature{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseBlkid([]byte(tt.in))
			if (err != nil) != tt.err {
				t.Fatalf("parseBlkid() error = %v, want error %v", err, tt.err)
			}
			if got != tt.want {
				t.Errorf("parseBlkid() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		sig  Signature
		want kind
	}{
		{Signature{}, kindBlank},
		{Signature{Type: "xfs", Label: Label}, kindOurFS},
		{Signature{Type: "ext4", Label: Label}, kindOurFS},
		{Signature{Type: "btrfs", Label: Label}, kindOurFS},
		{Signature{Type: "vfat", Label: Label}, kindForeign}, // our label on a type we never make
		{Signature{Type: "xfs", Label: "autonode-ep"}, kindForeign},
		{Signature{Type: "xfs"}, kindForeign},
		{Signature{Type: "xfs", Label: Label, PTType: "dos"}, kindForeign},
		{Signature{PTType: "gpt"}, kindForeign},
		{Signature{Ambivalent: true}, kindForeign},
		{Signature{Type: "linux_raid_member", Label: "host:ephemeral"}, kindMember},
		{Signature{Type: "linux_raid_member", Label: "ephemeral"}, kindMember},
		{Signature{Type: "linux_raid_member", Label: "host:scratch"}, kindForeign},
		{Signature{Type: "linux_raid_member", Label: "host:notephemeral"}, kindForeign},
		{Signature{Type: "LVM2_member"}, kindForeign},
		{Signature{Type: "swap"}, kindForeign},
	}
	for _, tt := range tests {
		t.Run(tt.sig.String(), func(t *testing.T) {
			if got := classify(tt.sig); got != tt.want {
				t.Errorf("classify(%+v) = %v, want %v", tt.sig, got, tt.want)
			}
		})
	}
}

// FuzzParseBlkid: labels and types come from the disk, so the parser must
// never panic, and what it parses must classify without panicking.
func FuzzParseBlkid(f *testing.F) {
	f.Add([]byte("DEVNAME=/dev/loop3\nUUID=0b6c\nTYPE=xfs\nLABEL=autonode-eph\n"))
	f.Add([]byte("LABEL=a\\ b\\$\\\"x\nTYPE=ext4\n"))
	f.Add([]byte("PTTYPE=gpt\n"))
	f.Add([]byte("LABEL=h:ephemeral\nTYPE=linux_raid_member\n"))
	f.Add([]byte("x\\"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := parseBlkid(data)
		if err != nil {
			return
		}
		k := classify(s)
		if k == kindOurFS && s.Label != Label {
			t.Fatalf("classified %+v as ours", s)
		}
		_ = s.String()
	})
}
