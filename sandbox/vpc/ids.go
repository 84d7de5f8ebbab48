package vpc

import "fmt"

// newID returns "<prefix>-0" followed by 16 hex digits, as AWS's long ids look.
// The digits are a bijective mix of a counter, so they are unique and repeat
// from run to run.
func (m *Model) newID(prefix string) string {
	m.seq++
	return fmt.Sprintf("%s-%017x", prefix, mix(m.seq))
}

// newMAC returns a locally administered unicast MAC (02:…), as EC2's are.
func (m *Model) newMAC() string {
	m.seq++
	v := mix(m.seq)
	return fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", byte(v>>32), byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// mix is splitmix64's finaliser: a bijection on uint64.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
