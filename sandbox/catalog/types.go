package catalog

// Default returns a fresh copy of the built-in catalog, sorted by name.
func Default() []InstanceType {
	nvme := func(disks int32, size int64) Storage {
		return Storage{TotalGiB: int64(disks) * size, Disks: disks, DiskSizeGiB: size}
	}
	small := func(name, arch string, vcpu int32, mem int64, mbps int64, perf string, enis, ipv4 int32, price float64) InstanceType {
		return InstanceType{
			Name: name, Arch: arch, VCPU: vcpu, Memory: mem,
			NetworkBandwidthMbps: mbps, NetworkPerformance: perf,
			NetworkCards: 1, MaxENIs: enis, IPv4PerENI: ipv4, IPv6PerENI: ipv4,
			Hypervisor: "nitro", PriceUSDHour: price,
			// Nitro's shared limit: EBS volumes, ENIs and instance-store
			// disks take from one pool of 28.
			EBS: EBSLimit{MaxAttachments: 28},
		}
	}
	with := func(t InstanceType, f func(*InstanceType)) InstanceType { f(&t); return t }

	return []InstanceType{
		small("c5.large", "amd64", 2, 4096, 750, "Up to 10 Gigabit", 3, 10, 0.085),
		with(small("c5n.18xlarge", "amd64", 72, 196608, 100000, "100 Gigabit", 15, 50, 3.888), func(t *InstanceType) {
			t.EFAMaxInterfaces = 1
		}),
		small("c6g.large", "arm64", 2, 4096, 750, "Up to 10 Gigabit", 3, 10, 0.068),
		small("c7g.large", "arm64", 2, 4096, 937, "Up to 12.5 Gigabit", 3, 10, 0.0725),
		with(small("g4dn.xlarge", "amd64", 4, 16384, 5000, "Up to 25 Gigabit", 3, 10, 0.526), func(t *InstanceType) {
			t.GPU = GPU{Count: 1, Name: "T4", Manufacturer: "NVIDIA", MemoryMiB: 16384}
			t.LocalNVMe = nvme(1, 125)
		}),
		with(small("g5.xlarge", "amd64", 4, 16384, 2500, "Up to 10 Gigabit", 4, 15, 1.006), func(t *InstanceType) {
			t.GPU = GPU{Count: 1, Name: "A10G", Manufacturer: "NVIDIA", MemoryMiB: 22888}
			t.LocalNVMe = nvme(1, 250)
		}),
		with(small("i3en.large", "amd64", 2, 16384, 2100, "Up to 25 Gigabit", 3, 10, 0.226), func(t *InstanceType) {
			t.LocalNVMe = nvme(1, 1250)
		}),
		with(small("inf2.xlarge", "amd64", 4, 16384, 2083, "Up to 15 Gigabit", 4, 15, 0.7582), func(t *InstanceType) {
			t.Neuron = Neuron{Count: 1, Name: "Inferentia2", CoresPerDevice: 2, CoreVersion: 2, MemoryMiB: 32768}
		}),
		small("m5.4xlarge", "amd64", 16, 65536, 5000, "Up to 10 Gigabit", 8, 30, 0.768),
		small("m5.large", "amd64", 2, 8192, 750, "Up to 10 Gigabit", 3, 10, 0.096),
		with(small("m5.metal", "amd64", 96, 393216, 25000, "25 Gigabit", 15, 50, 4.608), func(t *InstanceType) {
			t.Hypervisor, t.BareMetal = "", true
			t.EBS.MaxAttachments = 31 // AWS documents 31 for most bare-metal types
		}),
		small("m5.xlarge", "amd64", 4, 16384, 1250, "Up to 10 Gigabit", 4, 15, 0.192),
		with(small("m5d.large", "amd64", 2, 8192, 750, "Up to 10 Gigabit", 3, 10, 0.113), func(t *InstanceType) {
			t.LocalNVMe = nvme(1, 75)
		}),
		small("m6g.xlarge", "arm64", 4, 16384, 1250, "Up to 10 Gigabit", 4, 15, 0.154),
		with(small("m7i.large", "amd64", 2, 8192, 781, "Up to 12.5 Gigabit", 3, 10, 0.1008), func(t *InstanceType) {
			t.EBS = EBSLimit{MaxAttachments: 32, Dedicated: true} // 7th-generation types have a dedicated EBS limit
		}),
		with(small("p4d.24xlarge", "amd64", 96, 1179648, 400000, "4x 100 Gigabit", 15, 50, 21.957642), func(t *InstanceType) {
			t.GPU = GPU{Count: 8, Name: "A100", Manufacturer: "NVIDIA", MemoryMiB: 40960}
			t.EFAMaxInterfaces = 4
			t.NetworkCards = 4
			t.LocalNVMe = nvme(8, 1000)
		}),
		small("r5.large", "amd64", 2, 16384, 750, "Up to 10 Gigabit", 3, 10, 0.126),
		small("t3.medium", "amd64", 2, 4096, 256, "Up to 5 Gigabit", 3, 6, 0.0416),
		with(small("trn1.2xlarge", "amd64", 8, 32768, 3125, "Up to 12.5 Gigabit", 4, 15, 1.34375), func(t *InstanceType) {
			t.Neuron = Neuron{Count: 1, Name: "Trainium", CoresPerDevice: 2, CoreVersion: 2, MemoryMiB: 32768}
			t.LocalNVMe = nvme(1, 474)
		}),
	}
}
