package instancestore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// kubeletStarted reports whether the kubelet has started, and how that is
// known: one of the markers exists, or a process named processName runs
// (as /proc/<pid>/comm shows it). processName "" skips the process check.
// Setup must not mount under a running kubelet: its pods would keep the
// folders they had open on the root disk.
func kubeletStarted(markers []string, procRoot, processName string) (bool, string, error) {
	for _, m := range markers {
		if _, err := os.Lstat(m); err == nil {
			return true, "marker " + m + " exists", nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return false, "", fmt.Errorf("checking kubelet marker %s: %w", m, err)
		}
	}
	if processName == "" {
		return false, "", nil
	}
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return false, "", fmt.Errorf("listing processes in %s: %w", procRoot, err)
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		// A process may exit between the listing and the read: skip it.
		comm, err := os.ReadFile(filepath.Join(procRoot, e.Name(), "comm"))
		if err == nil && strings.TrimSpace(string(comm)) == processName {
			return true, fmt.Sprintf("process %s (pid %s) is running", processName, e.Name()), nil
		}
	}
	return false, "", nil
}
