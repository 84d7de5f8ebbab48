package cni_test

import (
	"github.com/autonode/autonode/agent/network/cni"
	"github.com/autonode/autonode/agent/network/cni/cnitest"
	"github.com/autonode/autonode/agent/network/ipam"
)

// Both the real pool and the test fake satisfy the interface the server
// consumes.
var (
	_ cni.Allocator = (*ipam.Pool)(nil)
	_ cni.Allocator = (*cnitest.Allocator)(nil)
)
