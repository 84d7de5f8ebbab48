//go:build tools

// Package tools pins controller-gen, which generates the DeepCopy methods and
// the CRDs of autonode's APIs (see the //go:generate lines beside each API
// package and `make generate`).
package tools

import (
	_ "sigs.k8s.io/controller-tools/cmd/controller-gen"
)
