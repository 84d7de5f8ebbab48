package datapath

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// eventBuffer is how many decoded events wait for the consumer before new ones are dropped (and counted).
const eventBuffer = 4096

// Events reads the flow events ring buffer until ctx ends, then closes the channel. Denials are always reported,
// allows when Config.EmitAllows is set; the programs drop events beyond the per-CPU rate (counted in the
// ratelimited metric), and this reader drops events its consumer does not take in time (counted too). Call it once:
// two readers would split the events between them.
func (d *Datapath) Events(ctx context.Context) <-chan Event {
	ch := make(chan Event, eventBuffer)
	rd, err := ringbuf.NewReader(d.objs.ApEvents)
	if err != nil {
		d.log.Error("cannot read flow events", "err", err)
		close(ch)
		return ch
	}
	go func() {
		<-ctx.Done()
		rd.Close()
	}()
	go func() {
		defer close(ch)
		var raw policyEvent
		for {
			rec, err := rd.Read()
			if errors.Is(err, ringbuf.ErrClosed) {
				return
			}
			if err != nil {
				d.log.Warn("reading flow events", "err", err)
				continue
			}
			if err := binary.Read(bytes.NewReader(rec.RawSample), binary.LittleEndian, &raw); err != nil {
				d.eventsLost.Add(1)
				continue
			}
			select {
			case ch <- d.decodeEvent(raw):
			default:
				d.eventsLost.Add(1)
			}
		}
	}()
	return ch
}

func (d *Datapath) decodeEvent(e policyEvent) Event {
	ev := Event{
		Time:      monoToWall(e.TsNs),
		Ifindex:   int(e.Ifindex),
		Direction: Direction(e.Dir),
		Verdict:   Verdict{Allowed: Reason(e.Reason).Allows(), Reason: Reason(e.Reason)},
		Protocol:  e.Proto,
	}
	var src, dst netip.Addr
	if e.Family == 4 {
		src, dst = netip.AddrFrom4([4]byte(e.Saddr[:4])), netip.AddrFrom4([4]byte(e.Daddr[:4]))
	} else {
		src, dst = netip.AddrFrom16(e.Saddr), netip.AddrFrom16(e.Daddr)
	}
	ev.Src, ev.Dst = netip.AddrPortFrom(src, e.Sport), netip.AddrPortFrom(dst, e.Dport)
	var p policyPod
	if err := d.objs.ApPods.Lookup(e.Ifindex, &p); err == nil {
		ev.HostIf, ev.Namespace, ev.Name = cstring(p.HostIf[:]), cstring(p.Ns[:]), cstring(p.Name[:])
	}
	return ev
}

// monoNow is the kernel's CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns.
func monoNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) // cannot fail for this clock
	return uint64(ts.Nano())
}

func monoToWall(ns uint64) time.Time {
	return time.Now().Add(-time.Duration(monoNow() - ns))
}
