package instancestore

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"time"

	"github.com/autonode/autonode/internal/atomicfile"
)

// Phase is how far setup got. The state file is written before each step
// that changes a disk, so that a setup cut short (a crash, a reboot, a
// timeout) is seen as such by the next one.
type Phase string

// The phases, in order.
const (
	// PhaseFormatting: about to wipe, create the array or make the
	// filesystem on State.Devices, which held nothing but our own data.
	PhaseFormatting Phase = "formatting"
	// PhaseBinding: the filesystem is made and mounted; the bind mounts
	// (and the first copy of their folders) are under way.
	PhaseBinding Phase = "binding"
	// PhaseDone: everything is mounted.
	PhaseDone Phase = "done"
)

// Layout is how the disks are joined.
type Layout string

// The layouts.
const (
	LayoutNone   Layout = "none"        // no instance-store disks
	LayoutSingle Layout = "single"      // one disk, formatted whole
	LayoutMdadm  Layout = "mdadm-raid0" // an md RAID0 array of two disks or more
	LayoutBtrfs  Layout = "btrfs-raid0" // one btrfs across the disks (RAID0 when two or more)
)

// State is the record of what setup did, kept at Options.StatePath.
type State struct {
	Version    int       `json:"version"`
	Phase      Phase     `json:"phase"`
	Layout     Layout    `json:"layout"`
	Devices    []string  `json:"devices,omitempty"`
	Target     string    `json:"target,omitempty"` // what is mounted: the disk, the array or the first btrfs device
	Filesystem string    `json:"filesystem,omitempty"`
	UUID       string    `json:"uuid,omitempty"`
	MountPoint string    `json:"mountPoint,omitempty"`
	Binds      []string  `json:"binds,omitempty"`
	Formatted  bool      `json:"formatted,omitempty"` // this setup made the filesystem, rather than finding it
	StartedAt  time.Time `json:"startedAt"`
	UpdatedAt  time.Time `json:"updatedAt"`
}

const stateVersion = 1

// ReadState reads the state file at path; a missing file gives nil, nil.
func ReadState(path string) (*State, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading state file %s: %w", path, err)
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("state file %s: version %d, want %d", path, st.Version, stateVersion)
	}
	return &st, nil
}

func writeState(path string, st *State, now time.Time) error {
	st.Version = stateVersion
	st.UpdatedAt = now.UTC()
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding state: %w", err)
	}
	return atomicfile.WriteFile(path, append(data, '\n'), 0o644)
}

// interruptedOn reports whether st records a setup that stopped while
// formatting exactly these devices: their partial content is then ours.
func (st *State) interruptedOn(devices []string) bool {
	return st != nil && st.Phase == PhaseFormatting && slices.Equal(st.Devices, devices)
}
