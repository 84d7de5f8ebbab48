package disruption

import (
	"fmt"
	"sync"
	"time"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
)

// Ledger holds the disruptions in flight, per pool, so that commands
// decided and executed concurrently never exceed a budget together.
// Reserve checks and records a command's candidates under one lock. An
// entry stays until it is released and a later snapshot shows its node
// disrupting or gone, so that a snapshot from a lagging cache cannot
// undercount.
type Ledger struct {
	mu sync.Mutex
	// entries: pool -> node key -> entry.
	entries map[string]map[string]*ledgerEntry
}

type ledgerEntry struct {
	reason   v1.DisruptionReason
	released bool
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger {
	return &Ledger{entries: map[string]map[string]*ledgerEntry{}}
}

// Reservation is a command's hold on its budgets.
type Reservation struct {
	l    *Ledger
	keys map[string][]string // pool -> node keys
}

// Reserve records cmd's candidates if, for every pool they belong to, the
// nodes in flight (the ledger's and those c shows disrupting, counted once)
// plus the new ones stay within the budget for cmd's reason at now.
func (l *Ledger) Reserve(c *Cluster, cmd *Command, now time.Time) (*Reservation, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.prune(c)
	want := map[string][]string{}
	for _, n := range cmd.Candidates {
		want[n.Pool] = append(want[n.Pool], n.Key())
	}
	for pool, keys := range want {
		p := c.Pools[pool]
		if p == nil {
			return nil, fmt.Errorf("nodepool %s of nodeclaim %s is gone", pool, keys[0])
		}
		inflight := map[string]bool{}
		total := 0
		for _, n := range c.Nodes {
			if n.Pool != pool {
				continue
			}
			total++
			if n.Disrupting {
				inflight[n.Key()] = true
			}
		}
		for k := range l.entries[pool] {
			inflight[k] = true
		}
		for _, k := range keys {
			if inflight[k] {
				return nil, fmt.Errorf("nodeclaim %s is already being disrupted", k)
			}
		}
		allowed := Allowed(p.Budgets, cmd.Reason, total, now)
		if len(inflight)+len(keys) > allowed {
			return nil, fmt.Errorf("nodepool %s: budget for %s allows %d nodes disrupting, %d are and the command adds %d",
				pool, cmd.Reason, allowed, len(inflight), len(keys))
		}
	}
	for pool, keys := range want {
		if l.entries[pool] == nil {
			l.entries[pool] = map[string]*ledgerEntry{}
		}
		for _, k := range keys {
			l.entries[pool][k] = &ledgerEntry{reason: cmd.Reason}
		}
	}
	return &Reservation{l: l, keys: want}, nil
}

// Release marks the reservation done once the candidates' NodeClaims are
// deleting. The entries go at the next Reserve whose snapshot shows the
// nodes disrupting or gone.
func (r *Reservation) Release() {
	r.l.mu.Lock()
	defer r.l.mu.Unlock()
	for pool, keys := range r.keys {
		for _, k := range keys {
			if e := r.l.entries[pool][k]; e != nil {
				e.released = true
			}
		}
	}
}

// Cancel drops the reservation at once, for a command that failed and
// whose nodes are back in service (untainted). A lagging snapshot that
// still shows them tainted only overcounts.
func (r *Reservation) Cancel() {
	r.l.mu.Lock()
	defer r.l.mu.Unlock()
	for pool, keys := range r.keys {
		for _, k := range keys {
			delete(r.l.entries[pool], k)
		}
	}
}

// InFlight is how many nodes of pool the ledger holds.
func (l *Ledger) InFlight(pool string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries[pool])
}

// prune drops released entries that c has caught up with: the node shows
// as disrupting, or is gone.
func (l *Ledger) prune(c *Cluster) {
	seen := map[string]*Node{}
	for _, n := range c.Nodes {
		seen[n.Key()] = n
	}
	for _, es := range l.entries {
		for k, e := range es {
			if !e.released {
				continue
			}
			if n := seen[k]; n == nil || n.Disrupting {
				delete(es, k)
			}
		}
	}
}

// Overlay marks the nodes the ledger holds as Disrupting in c, so that a
// decision on a snapshot that has not seen them yet charges them.
func (l *Ledger) Overlay(c *Cluster) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, n := range c.Nodes {
		if _, ok := l.entries[n.Pool][n.Key()]; ok {
			n.Disrupting = true
		}
	}
}
