package identity

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/autonode/autonode/internal/locallink"

	cnins "github.com/containernetworking/plugins/pkg/ns"
)

// setup makes the link and binds the listeners, in Options.NetNS if set.
func (s *Server) setup() ([]net.Listener, error) {
	if !s.opts.NoLink {
		typ, err := locallink.Ensure(s.opts.NetNS, s.opts.LinkName, s.opts.LinkType, s.opts.Addresses)
		if err != nil {
			return nil, err
		}
		if typ != "dummy" {
			s.log.Warn("this kernel has no dummy link driver; the Pod Identity addresses sit on an ifb link instead", "link", s.opts.LinkName)
		}
	}
	var lns []net.Listener
	bind := func() error {
		for _, a := range s.opts.Addresses {
			addr := netip.AddrPortFrom(a, uint16(s.opts.Port)).String()
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("pod identity listener on %s: %w", addr, err)
			}
			lns = append(lns, ln)
		}
		return nil
	}
	var err error
	if s.opts.NetNS == "" {
		err = bind()
	} else {
		err = cnins.WithNetNSPath(s.opts.NetNS, func(cnins.NetNS) error { return bind() })
	}
	if err != nil {
		for _, ln := range lns {
			_ = ln.Close()
		}
		return nil, err
	}
	return lns, nil
}
