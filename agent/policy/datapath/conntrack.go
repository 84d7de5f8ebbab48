package datapath

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
)

// Run sweeps the connection tracker and the fragment table every Config.GCInterval until ctx ends.
//
// The sweep never deletes a live flow. The programs stamp every entry with its expiry on each packet; the sweep
// deletes an entry that looks expired (or belongs to a pod that is gone) with an atomic lookup-and-delete, then
// looks at the value it removed: if a packet refreshed it since the scan, it puts it back unless the programs have
// already created a new one.
func (d *Datapath) Run(ctx context.Context) error {
	if d.cfg.ReadOnly {
		return errReadOnly
	}
	t := time.NewTicker(d.cfg.GCInterval)
	defer t.Stop()
	for {
		if err := d.sweep(ctx); err != nil {
			d.log.Warn("conntrack sweep", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// sweep runs one pass over ap_ct and ap_frags.
func (d *Datapath) sweep(ctx context.Context) error {
	// The scan judges pods from a snapshot; the delete step checks again against the live pod record.
	snapshot, err := d.pods()
	if err != nil {
		return err
	}
	alive := func(ifindex uint32, cookie uint64) bool {
		var p policyPod
		return d.objs.ApPods.Lookup(ifindex, &p) == nil && p.Cookie == cookie
	}
	now := monoNow()
	var stale []policyCtKey
	n := 0
	// Read in batches: one syscall per 4,096 flows instead of two per flow.
	keys := make([]policyCtKey, 4096)
	vals := make([]policyCtVal, 4096)
	var cursor ebpf.MapBatchCursor
	for {
		c, err := d.objs.ApCt.BatchLookup(&cursor, keys, vals, nil)
		for i := range c {
			n++
			if p, ok := snapshot[keys[i].Ifindex]; vals[i].ExpiresNs <= now || !ok || p.Cookie != vals[i].Cookie {
				stale = append(stale, keys[i])
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading map ap_ct: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	var v policyCtVal
	deleted := 0
	for _, k := range stale {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := d.objs.ApCt.LookupAndDelete(k, &v); err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				continue
			}
			return fmt.Errorf("deleting from map ap_ct: %w", err)
		}
		if v.ExpiresNs > monoNow() && alive(k.Ifindex, v.Cookie) { // refreshed since the scan
			d.ctKeptLive.Add(1)
			if err := d.objs.ApCt.Update(k, v, ebpf.UpdateNoExist); err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
				return fmt.Errorf("restoring a live flow in map ap_ct: %w", err)
			}
			continue
		}
		deleted++
	}
	d.ctSweptExpired.Add(uint64(deleted))
	d.ctEntries.Store(int64(n - deleted))

	var fk policyFragKey
	var fv policyFragVal
	var staleFrags []policyFragKey
	fit := d.objs.ApFrags.Iterate()
	for fit.Next(&fk, &fv) {
		if p, ok := snapshot[fk.Ifindex]; fv.ExpiresNs <= now || !ok || p.Cookie != fv.Cookie {
			staleFrags = append(staleFrags, fk)
		}
	}
	if err := fit.Err(); err != nil {
		return fmt.Errorf("reading map ap_frags: %w", err)
	}
	for _, k := range staleFrags {
		if err := d.objs.ApFrags.LookupAndDelete(k, &fv); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("deleting from map ap_frags: %w", err)
		}
		if fv.ExpiresNs > monoNow() && alive(k.Ifindex, fv.Cookie) {
			_ = d.objs.ApFrags.Update(k, fv, ebpf.UpdateNoExist) // a new first fragment may have won the slot
		}
	}
	return nil
}
