package nvidia

import (
	"fmt"
	"slices"
	"time"
)

// XIDPolicy decides what an XID (an NVIDIA driver error code) does to the
// health of the GPU that raised it.
type XIDPolicy struct {
	// Ignore lists XIDs caused by applications (page faults, illegal
	// instructions, resets by the user); the GPU stays healthy. Default is
	// DefaultIgnoredXIDs.
	Ignore []uint64
	// Fatal lists XIDs after which the GPU is not trusted again until the
	// agent restarts or the policy changes. Default is DefaultFatalXIDs.
	Fatal []uint64
	// QuietPeriod is how long a GPU that raised any other XID stays
	// unhealthy after its last one. Default is 5 minutes.
	QuietPeriod time.Duration
}

// DefaultIgnoredXIDs returns the XIDs that applications cause, as NVIDIA's
// k8s-device-plugin ignores them: 13 graphics engine exception, 31 memory
// page fault, 43 GPU stopped processing, 45 preemptive cleanup, 68 video
// decoder exception, 109 context switch timeout.
func DefaultIgnoredXIDs() []uint64 { return []uint64{13, 31, 43, 45, 68, 109} }

// DefaultFatalXIDs returns the XIDs that need a GPU reset or a new instance:
// 48 double-bit ECC (also used for NVML's DoubleBitEccError event), 74 NVLink
// error, 79 fallen off the bus, 95 uncontained ECC, 119 and 120 GSP errors,
// 140 unrecovered ECC.
func DefaultFatalXIDs() []uint64 { return []uint64{48, 74, 79, 95, 119, 120, 140} }

// xidDoubleBitECC stands for NVML's DoubleBitEccError event, which carries
// no XID of its own.
const xidDoubleBitECC = 48

func (p XIDPolicy) withDefaults() XIDPolicy {
	if p.Ignore == nil {
		p.Ignore = DefaultIgnoredXIDs()
	}
	if p.Fatal == nil {
		p.Fatal = DefaultFatalXIDs()
	}
	if p.QuietPeriod == 0 {
		p.QuietPeriod = 5 * time.Minute
	}
	return p
}

// Validate rejects a policy that lists an XID as both ignored and fatal.
func (p XIDPolicy) Validate() error {
	for _, x := range p.Fatal {
		if slices.Contains(p.Ignore, x) {
			return fmt.Errorf("XID policy: XID %d is both ignored and fatal", x)
		}
	}
	if p.QuietPeriod < 0 {
		return fmt.Errorf("XID policy: negative quiet period %s", p.QuietPeriod)
	}
	return nil
}

type xidClass int

const (
	xidIgnored xidClass = iota
	xidTransient
	xidFatal
)

func (p XIDPolicy) classify(xid uint64) xidClass {
	switch {
	case slices.Contains(p.Fatal, xid):
		return xidFatal
	case slices.Contains(p.Ignore, xid):
		return xidIgnored
	}
	return xidTransient
}

// gpuHealth is what the XID history of one GPU says about it. It is kept
// across restarts of Run so that a fatal XID is not forgotten when NVML is
// re-initialised.
type gpuHealth struct {
	// fatal holds fatal XIDs and when each was first seen; kept so that a
	// policy change can re-classify them.
	fatal map[uint64]time.Time
	// lastTransient is the time and code of the newest transient XID.
	lastTransient    time.Time
	lastTransientXID uint64
}

// record notes xid at now under p.
func (h *gpuHealth) record(p XIDPolicy, xid uint64, now time.Time) {
	switch p.classify(xid) {
	case xidFatal:
		if h.fatal == nil {
			h.fatal = map[uint64]time.Time{}
		}
		if _, seen := h.fatal[xid]; !seen {
			h.fatal[xid] = now
		}
	case xidTransient:
		h.lastTransient, h.lastTransientXID = now, xid
	}
}

// reclassify applies a new policy to the fatal XIDs seen so far: one that is
// now transient counts from when it was seen, one now ignored is dropped.
func (h *gpuHealth) reclassify(p XIDPolicy) {
	for xid, at := range h.fatal {
		switch p.classify(xid) {
		case xidFatal:
			continue
		case xidTransient:
			if at.After(h.lastTransient) {
				h.lastTransient, h.lastTransientXID = at, xid
			}
		}
		delete(h.fatal, xid)
	}
}

// reason says why the GPU is unhealthy at now, or "" when it is healthy.
func (h *gpuHealth) reason(p XIDPolicy, now time.Time) string {
	if len(h.fatal) > 0 {
		xids := make([]uint64, 0, len(h.fatal))
		for x := range h.fatal {
			xids = append(xids, x)
		}
		slices.Sort(xids)
		return fmt.Sprintf("fatal XID %v", xids)
	}
	if !h.lastTransient.IsZero() && now.Sub(h.lastTransient) < p.QuietPeriod {
		return fmt.Sprintf("XID %d less than %s ago", h.lastTransientXID, p.QuietPeriod)
	}
	return ""
}
