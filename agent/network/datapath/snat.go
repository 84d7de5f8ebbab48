package datapath

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// SNATTable is the nftables table (family ip) that holds our source NAT. We
// never touch any other table.
const SNATTable = "autonode"

// snatChain is the postrouting NAT chain inside SNATTable.
const snatChain = "snat-external"

// ApplySNAT makes the table SNATTable match the options, in one atomic
// transaction: the table is created if missing, deleted, and rebuilt, so a
// re-apply converges and a crash never leaves half a rule set. With external
// SNAT the table is removed instead.
//
// The chain, at the srcnat hook priority:
//
//	ip daddr <each VPC and excluded CIDR> return
//	oifname <primary ENI> snat to <primary IP> fully-random
func (d *Datapath) ApplySNAT(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	enable := !d.opts.SNAT.External
	var oif string
	if enable {
		if d.opts.PrimaryMAC == "" || !d.opts.PrimaryIP.Is4() {
			return errors.New("SNAT needs the primary ENI's MAC and IPv4 address (or external SNAT)")
		}
		link, err := d.linkByMAC(d.opts.PrimaryMAC)
		if err != nil {
			return fmt.Errorf("SNAT: primary ENI: %w", err)
		}
		oif = link.Attrs().Name
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(d.nodeNS.Fd())))
	if err != nil {
		return fmt.Errorf("nftables connection in netns %s: %w", d.nodeNS.Path(), err)
	}
	defer c.CloseLasting()
	t := &nftables.Table{Name: SNATTable, Family: nftables.TableFamilyIPv4}
	// add+delete in one batch: deleting a table that may not exist.
	c.AddTable(t)
	c.DelTable(t)
	if enable {
		c.AddTable(t)
		ch := c.AddChain(&nftables.Chain{
			Name: snatChain, Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
		})
		for _, p := range append(append([]netip.Prefix{}, d.opts.VPCCIDRs...), d.opts.SNAT.ExcludedCIDRs...) {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: daddrIn(p, &expr.Verdict{Kind: expr.VerdictReturn})})
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(oif)},
			&expr.Immediate{Register: 1, Data: d.opts.PrimaryIP.AsSlice()},
			&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegAddrMax: 1, FullyRandom: true},
		}})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("applying nftables table %s in netns %s: %w", SNATTable, d.nodeNS.Path(), err)
	}
	return nil
}

// RemoveSNAT deletes the table SNATTable, if present.
func (d *Datapath) RemoveSNAT(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(d.nodeNS.Fd())))
	if err != nil {
		return fmt.Errorf("nftables connection in netns %s: %w", d.nodeNS.Path(), err)
	}
	defer c.CloseLasting()
	t := &nftables.Table{Name: SNATTable, Family: nftables.TableFamilyIPv4}
	c.AddTable(t)
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("deleting nftables table %s in netns %s: %w", SNATTable, d.nodeNS.Path(), err)
	}
	return nil
}

// daddrIn matches an IPv4 destination within p, then applies v.
func daddrIn(p netip.Prefix, v expr.Any) []expr.Any {
	p = p.Masked()
	mask := make([]byte, 4)
	binary.BigEndian.PutUint32(mask, ^uint32(0)<<(32-p.Bits()))
	if p.Bits() == 0 {
		mask = []byte{0, 0, 0, 0}
	}
	return []expr.Any{
		// The IPv4 destination address is at offset 16 of the header.
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Addr().AsSlice()},
		v,
	}
}

// ifname pads a link name as the kernel compares it (IFNAMSIZ bytes).
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}
