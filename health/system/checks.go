package system

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/autonode/autonode/health"
)

// checkPIDs compares the threads in use with the kernel's limit. Every
// thread takes a PID, so loadavg's total of scheduling entities is the PIDs
// in use; the limit is the lower of pid_max and threads-max.
func (m *Monitor) checkPIDs() ([]finding, error) {
	limit, err := readUint(filepath.Join(m.opts.ProcRoot, "sys/kernel/pid_max"))
	if err != nil {
		return nil, err
	}
	if tm, err := readUint(filepath.Join(m.opts.ProcRoot, "sys/kernel/threads-max")); err == nil && tm > 0 && tm < limit {
		limit = tm
	}
	if limit == 0 {
		return nil, fmt.Errorf("pid limit in %s is 0", m.opts.ProcRoot)
	}
	used, err := threadsInUse(filepath.Join(m.opts.ProcRoot, "loadavg"))
	if err != nil {
		return nil, err
	}
	ratio := float64(used) / float64(limit)
	return []finding{{
		reason: health.ReasonPIDExhausted, condition: health.KernelReady, severity: health.Fatal, object: "pid",
		verdict: judge(ratio, m.opts.PIDs),
		message: fmt.Sprintf("%d of %d PIDs in use (%.1f%%; fails above %.0f%%, clears below %.0f%%)",
			used, limit, 100*ratio, 100*m.opts.PIDs.Fail, 100*m.opts.PIDs.Clear),
	}}, nil
}

// threadsInUse reads the total from loadavg's "running/total" field.
func threadsInUse(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", path, err)
	}
	f := strings.Fields(string(b))
	if len(f) < 4 {
		return 0, fmt.Errorf("parsing %s: want at least 4 fields, got %d", path, len(f))
	}
	_, total, ok := strings.Cut(f[3], "/")
	if !ok {
		return 0, fmt.Errorf("parsing %s: field %q is not running/total", path, f[3])
	}
	n, err := strconv.ParseUint(total, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parsing %s: %w", path, err)
	}
	return n, nil
}

// checkConntrack compares the conntrack table's entries with its size. The
// files exist only while nf_conntrack is loaded; without them the check is
// disabled rather than failing.
func (m *Monitor) checkConntrack() ([]finding, error) {
	dir := filepath.Join(m.opts.ProcRoot, "sys/net/netfilter")
	count, err := readUint(filepath.Join(dir, "nf_conntrack_count"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %w (nf_conntrack not loaded)", errDisabled, err)
	}
	if err != nil {
		return nil, err
	}
	limit, err := readUint(filepath.Join(dir, "nf_conntrack_max"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %w", errDisabled, err)
	}
	if err != nil {
		return nil, err
	}
	if limit == 0 {
		return nil, fmt.Errorf("%w: nf_conntrack_max in %s is 0", errDisabled, dir)
	}
	ratio := float64(count) / float64(limit)
	return []finding{{
		reason: health.ReasonConntrackFull, condition: health.NetworkingReady, severity: health.Warning, object: "conntrack",
		verdict: judge(ratio, m.opts.Conntrack),
		message: fmt.Sprintf("%d of %d conntrack entries in use (%.1f%%; fails above %.0f%%, clears below %.0f%%)",
			count, limit, 100*ratio, 100*m.opts.Conntrack.Fail, 100*m.opts.Conntrack.Clear),
	}}, nil
}

// checkFilesystems checks each configured path's filesystem for space,
// inodes and a read-only mount.
func (m *Monitor) checkFilesystems() ([]finding, error) {
	if len(m.opts.Paths) == 0 {
		return nil, nil
	}
	mountinfo := filepath.Join(m.opts.ProcRoot, "self/mountinfo")
	mounts, err := readMountInfo(mountinfo)
	if err != nil {
		return nil, err
	}
	var out []finding
	var errs []error
	for _, p := range m.opts.Paths {
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			if !m.missing[p] {
				m.missing[p] = true
				m.log.Info("skipping filesystem checks for a path that does not exist", "path", p)
			}
			continue
		}
		m.missing[p] = false
		mi, ok := containingMount(mounts, p)
		if !ok {
			errs = append(errs, fmt.Errorf("no mount in %s holds %s", mountinfo, p))
			continue
		}
		ro := pass
		msg := fmt.Sprintf("%s (%s on %s) is mounted read-write", mi.MountPoint, mi.FSType, mi.Source)
		if mi.ReadOnly() {
			ro = fail
			msg = fmt.Sprintf("%s (%s on %s, holding %s) is mounted read-only (options %s, super options %s)",
				mi.MountPoint, mi.FSType, mi.Source, p, strings.Join(mi.Options, ","), strings.Join(mi.SuperOptions, ","))
		}
		out = append(out, finding{
			reason: health.ReasonReadOnlyFilesystem, condition: health.StorageReady, severity: health.Fatal,
			object: mi.MountPoint, verdict: ro, message: msg,
		})

		var st unix.Statfs_t
		if err := m.opts.Statfs(p, &st); err != nil {
			errs = append(errs, fmt.Errorf("statfs %s: %w", p, err))
			continue
		}
		if st.Blocks > 0 {
			// Bavail, not Bfree: the root-reserved blocks are not there for pods.
			used := float64(st.Blocks-st.Bavail) / float64(st.Blocks)
			out = append(out, finding{
				reason: health.ReasonDiskPressure, condition: health.StorageReady, severity: health.Warning,
				object: mi.MountPoint + " bytes", verdict: judge(used, m.opts.Disk),
				message: fmt.Sprintf("%s (holding %s): %.1f%% of space used, %d MiB available (fails above %.0f%%, clears below %.0f%%)",
					mi.MountPoint, p, 100*used, st.Bavail*uint64(st.Bsize)>>20, 100*m.opts.Disk.Fail, 100*m.opts.Disk.Clear),
			})
		}
		if st.Files > 0 { // some filesystems (btrfs) report no inode limit
			used := float64(st.Files-st.Ffree) / float64(st.Files)
			out = append(out, finding{
				reason: health.ReasonDiskPressure, condition: health.StorageReady, severity: health.Warning,
				object: mi.MountPoint + " inodes", verdict: judge(used, m.opts.Inodes),
				message: fmt.Sprintf("%s (holding %s): %.1f%% of inodes used, %d free (fails above %.0f%%, clears below %.0f%%)",
					mi.MountPoint, p, 100*used, st.Ffree, 100*m.opts.Inodes.Fail, 100*m.opts.Inodes.Clear),
			})
		}
	}
	return out, errors.Join(errs...)
}

func readMountInfo(path string) ([]MountInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	defer f.Close()
	var out []MountInfo
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		mi, err := ParseMountInfo(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", path, err)
		}
		out = append(out, mi)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return out, nil
}

// checkClock reads the kernel's NTP state: STA_UNSYNC set means no time
// daemon has disciplined the clock (or it gave up), and maxerror is the
// kernel's bound on the clock's error, growing while nobody corrects it.
func (m *Monitor) checkClock() ([]finding, error) {
	var tx unix.Timex // Modes 0: read only, no privilege needed
	state, err := m.opts.Timex.Adjtimex(&tx)
	if err != nil {
		return nil, fmt.Errorf("adjtimex: %w", err)
	}
	maxErr := time.Duration(tx.Maxerror) * time.Microsecond
	v, msg := pass, fmt.Sprintf("clock synchronised (max error %s)", maxErr)
	switch {
	case tx.Status&unix.STA_UNSYNC != 0 || state == unix.TIME_ERROR:
		v, msg = fail, fmt.Sprintf("clock not synchronised: the kernel's STA_UNSYNC is set (max error %s)", maxErr)
	case maxErr > m.opts.MaxClockError:
		v, msg = fail, fmt.Sprintf("clock error bound %s exceeds %s", maxErr, m.opts.MaxClockError)
	}
	return []finding{{
		reason: health.ReasonClockUnsynchronized, condition: health.KernelReady, severity: health.Warning,
		object: "clock", verdict: v, message: msg,
	}}, nil
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", path, err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parsing %s: %w", path, err)
	}
	return n, nil
}
