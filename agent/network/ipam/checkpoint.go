package ipam

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	"github.com/autonode/autonode/internal/atomicfile"
)

// checkpointVersion is the schema version this package writes and reads. A
// change to the schema in the package doc must bump it and teach
// decodeCheckpoint the old one.
const checkpointVersion = 1

// maxCheckpoint bounds what is read: a node has at most a few hundred
// allocations, a few hundred bytes each.
const maxCheckpoint = 16 << 20

type checkpoint struct {
	Version     int               `json:"version"`
	Allocations []checkpointAlloc `json:"allocations"`
	Cooling     []checkpointCool  `json:"cooling,omitempty"`
}

type checkpointAlloc struct {
	ContainerID string     `json:"containerID"`
	IfName      string     `json:"ifName"`
	Addr        netip.Addr `json:"addr"`
	ENI         string     `json:"eni"`
	Namespace   string     `json:"namespace,omitempty"`
	Name        string     `json:"name,omitempty"`
	UID         string     `json:"uid,omitempty"`
	Netns       string     `json:"netns,omitempty"`
	Created     time.Time  `json:"created"`
}

type checkpointCool struct {
	Addr  netip.Addr `json:"addr"`
	Until time.Time  `json:"until"`
}

// decodeCheckpoint parses and checks a checkpoint: one JSON document of a
// known version, every entry complete, no key or address twice.
func decodeCheckpoint(data []byte) (checkpoint, error) {
	var c checkpoint
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&c); err != nil {
		return checkpoint{}, fmt.Errorf("decoding: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return checkpoint{}, errors.New("decoding: data after the document")
	}
	if c.Version != checkpointVersion {
		return checkpoint{}, fmt.Errorf("version %d, want %d", c.Version, checkpointVersion)
	}
	keys := map[Key]bool{}
	addrs := map[netip.Addr]bool{}
	for i, a := range c.Allocations {
		k := Key{ContainerID: a.ContainerID, IfName: a.IfName}
		switch {
		case a.ContainerID == "" || a.IfName == "":
			return checkpoint{}, fmt.Errorf("allocation %d: no container id or interface", i)
		case !a.Addr.Is4():
			return checkpoint{}, fmt.Errorf("allocation %d (%s/%s): address %v is not IPv4", i, a.ContainerID, a.IfName, a.Addr)
		case keys[k]:
			return checkpoint{}, fmt.Errorf("allocation %d: key %s/%s twice", i, a.ContainerID, a.IfName)
		case addrs[a.Addr]:
			return checkpoint{}, fmt.Errorf("allocation %d: address %s twice", i, a.Addr)
		}
		keys[k], addrs[a.Addr] = true, true
	}
	for i, c := range c.Cooling {
		if !c.Addr.Is4() {
			return checkpoint{}, fmt.Errorf("cooling entry %d: address %v is not IPv4", i, c.Addr)
		}
	}
	return c, nil
}

// snapshotLocked builds the checkpoint of the pool's allocations.
func (p *Pool) snapshotLocked() checkpoint {
	c := checkpoint{Version: checkpointVersion, Allocations: make([]checkpointAlloc, 0, len(p.byKey))}
	now := p.cfg.Now()
	for _, s := range p.order {
		if a := s.alloc; a != nil {
			c.Allocations = append(c.Allocations, checkpointAlloc{
				ContainerID: a.Key.ContainerID, IfName: a.Key.IfName, Addr: a.Addr, ENI: a.ENI,
				Namespace: a.Pod.Namespace, Name: a.Pod.Name, UID: a.Pod.UID, Netns: a.Pod.Netns, Created: s.created,
			})
		} else if now.Before(s.coolUntil) {
			c.Cooling = append(c.Cooling, checkpointCool{Addr: s.addr, Until: s.coolUntil})
		}
	}
	return c
}

// saveLocked writes the checkpoint; called on every change of allocations.
func (p *Pool) saveLocked() error {
	data, err := json.Marshal(p.snapshotLocked())
	if err != nil {
		return fmt.Errorf("encoding checkpoint %s: %w", p.cfg.CheckpointPath, err)
	}
	if err := atomicfile.WriteFile(p.cfg.CheckpointPath, data, 0o600); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}

// readCheckpoint loads the checkpoint. A missing file is an empty pool. A
// file that does not decode is renamed to <path>.corrupt-<time> and
// reported with corrupt set, so that nothing is lost and the pool rebuilds.
func (p *Pool) readCheckpoint() (c checkpoint, corrupt bool, err error) {
	path := p.cfg.CheckpointPath
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return checkpoint{Version: checkpointVersion}, false, nil
	}
	if err != nil {
		return checkpoint{}, false, fmt.Errorf("reading checkpoint %s: %w", path, err)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxCheckpoint+1))
	f.Close()
	if err != nil {
		return checkpoint{}, false, fmt.Errorf("reading checkpoint %s: %w", path, err)
	}
	c, derr := decodeCheckpoint(data)
	if derr == nil && len(data) <= maxCheckpoint {
		return c, false, nil
	}
	if derr == nil {
		derr = fmt.Errorf("larger than %d bytes", maxCheckpoint)
	}
	aside, err := atomicfile.SetAside(path, "", p.cfg.Now())
	if err != nil {
		return checkpoint{}, false, fmt.Errorf("corrupt checkpoint (%v): %w", derr, err)
	}
	p.log.Error("ipam checkpoint is corrupt; kept aside, rebuilding from the runtime and EC2",
		"path", path, "aside", aside, "err", derr)
	return checkpoint{Version: checkpointVersion}, true, fmt.Errorf("checkpoint %s: %w", path, derr)
}

// restoreLocked applies a checkpoint to slots discovered from EC2.
// Allocations whose address EC2 no longer has are dropped with a log line.
func (p *Pool) restoreLocked(c checkpoint) {
	for _, a := range c.Allocations {
		s := p.slots[a.Addr]
		if s == nil {
			p.log.Warn("dropping checkpointed allocation: EC2 no longer assigns its address to this node",
				"container", a.ContainerID, "ifName", a.IfName, "addr", a.Addr, "eni", a.ENI)
			continue
		}
		key := Key{ContainerID: a.ContainerID, IfName: a.IfName}
		e := s.eni
		s.alloc = &Allocation{
			Key: key, Pod: PodMeta{Namespace: a.Namespace, Name: a.Name, UID: a.UID, Netns: a.Netns},
			Addr: a.Addr, ENI: e.id, DeviceIndex: e.device, MAC: e.mac, RouteTable: e.routeTable(), SubnetCIDR: e.cidr,
		}
		s.created = a.Created
		p.byKey[key] = s
	}
	for _, cl := range c.Cooling {
		if s := p.slots[cl.Addr]; s != nil && s.alloc == nil {
			s.coolUntil = cl.Until
		}
	}
}
