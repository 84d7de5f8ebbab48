package datapath

// The generated policy_bpfel.go and policy_bpfel.o are committed, so building needs no clang; `make generate`
// rebuilds them (clang 14 or later and libbpf headers). Only the little-endian object is built: autonode runs on
// amd64 and arm64. The second -I names the arm64 multiarch headers; clang ignores whichever is missing.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu -I/usr/include/aarch64-linux-gnu" -target bpfel -go-package datapath -type event -type rule_key -type rule_val -type pod -type ct_key -type ct_val -type frag_key -type frag_val -type node_key -type config -type bucket policy bpf/policy.c
