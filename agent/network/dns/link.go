package dns

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	cnins "github.com/containernetworking/plugins/pkg/ns"

	"golang.org/x/sys/unix"
)

// listen binds UDP and TCP on the configured address, in Options.NetNS if
// set. With PortAny both take the port the kernel gives UDP, retrying when
// TCP finds it taken.
func (r *Resolver) listen() (net.PacketConn, net.Listener, error) {
	var (
		udp net.PacketConn
		tcp net.Listener
	)
	bind := func() error {
		port := max(r.opts.Port, 0)
		var err error
		for range 10 {
			addr := net.JoinHostPort(r.opts.Address.String(), strconv.Itoa(port))
			if udp, err = net.ListenPacket("udp", addr); err != nil {
				return fmt.Errorf("DNS listener on udp %s: %w", addr, err)
			}
			addr = udp.LocalAddr().String()
			if tcp, err = net.Listen("tcp", addr); err == nil {
				return nil
			}
			_ = udp.Close()
			if r.opts.Port != PortAny || !errors.Is(err, unix.EADDRINUSE) {
				break
			}
		}
		return fmt.Errorf("DNS listener on tcp %s: %w", net.JoinHostPort(r.opts.Address.String(), strconv.Itoa(port)), err)
	}
	var err error
	if r.opts.NetNS == "" {
		err = bind()
	} else {
		err = cnins.WithNetNSPath(r.opts.NetNS, func(cnins.NetNS) error { return bind() })
	}
	if err != nil {
		return nil, nil, err
	}
	return udp, tcp, nil
}
