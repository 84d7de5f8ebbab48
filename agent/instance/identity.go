// Package instance reads the node's own identity from the EC2 instance
// metadata service (IMDSv2) through aws-sdk-go-v2's imds client, checks every
// answer, and keeps asking with backoff while the service is slow or down:
// nothing else in the agent can start without it.
package instance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"

	"github.com/autonode/autonode/agent/backoff"
)

// Identity is what the agent knows about its instance.
type Identity struct {
	InstanceID       string
	InstanceType     string
	AvailabilityZone string
	Region           string
	// MAC is the primary network interface's MAC; MACs lists every attached
	// interface's, in the order IMDS gives them.
	MAC         string
	MACs        []string
	PrivateIPv4 netip.Addr
	Hostname    string
	// VPCCIDRs are the VPC's IPv4 blocks, the first one primary: traffic to
	// them is not SNATed, and the VPC resolver is the primary's base + 2.
	VPCCIDRs []netip.Prefix
}

// ProviderID is the Kubernetes spec.providerID of this instance's Node.
func (id Identity) ProviderID() string {
	return "aws:///" + id.AvailabilityZone + "/" + id.InstanceID
}

// maxBody caps what one metadata answer may be; real answers are a few
// hundred bytes, and a broken or hostile endpoint must not exhaust memory.
const maxBody = 64 << 10

// NewClient returns an IMDSv2-only client: the SDK would otherwise fall back
// to token-less IMDSv1 when the token request fails. An empty endpoint means
// the SDK's default.
func NewClient(endpoint string) *imds.Client {
	return imds.New(imds.Options{Endpoint: endpoint, EnableFallback: aws.FalseTernary})
}

// MetadataGetter is the part of *imds.Client that Fetch uses.
type MetadataGetter interface {
	GetMetadata(ctx context.Context, in *imds.GetMetadataInput, optFns ...func(*imds.Options)) (*imds.GetMetadataOutput, error)
}

// Options tunes Fetch.
type Options struct {
	Logger *slog.Logger
	// Timeout bounds one metadata request. Default is 5s.
	Timeout time.Duration
	// InitialBackoff and MaxBackoff shape the retries. Defaults 1s and 30s.
	InitialBackoff, MaxBackoff time.Duration
}

// Fetch reads the identity, retrying with capped exponential backoff until it
// gets a valid one or ctx ends. Each failed attempt is logged with the reason.
func Fetch(ctx context.Context, client MetadataGetter, opts Options) (Identity, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.InitialBackoff <= 0 {
		opts.InitialBackoff = time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 30 * time.Second
	}
	delays := backoff.New(opts.InitialBackoff, opts.MaxBackoff)
	for attempt := 1; ; attempt++ {
		id, err := fetchOnce(ctx, client, opts.Timeout)
		if err == nil {
			opts.Logger.Info("instance identity read from IMDS", "instance", id.InstanceID,
				"instanceType", id.InstanceType, "zone", id.AvailabilityZone, "attempts", attempt)
			return id, nil
		}
		if ctx.Err() != nil {
			return Identity{}, fmt.Errorf("reading instance identity: %w", errors.Join(ctx.Err(), err))
		}
		delay := delays.Step()
		opts.Logger.Warn("instance metadata service unavailable or invalid; retrying",
			"attempt", attempt, "backoff", delay, "err", err)
		if sleepErr := backoff.Sleep(ctx, delay); sleepErr != nil {
			return Identity{}, fmt.Errorf("reading instance identity: %w", errors.Join(sleepErr, err))
		}
	}
}

// fetchOnce reads and checks every field once.
func fetchOnce(ctx context.Context, client MetadataGetter, timeout time.Duration) (Identity, error) {
	get := func(path string) (string, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		out, err := client.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
		if err != nil {
			return "", fmt.Errorf("metadata %s: %w", path, err)
		}
		defer out.Content.Close()
		body, err := io.ReadAll(io.LimitReader(out.Content, maxBody+1))
		if err != nil {
			return "", fmt.Errorf("metadata %s: reading body: %w", path, err)
		}
		if len(body) > maxBody {
			return "", fmt.Errorf("metadata %s: answer larger than %d bytes", path, maxBody)
		}
		return string(body), nil
	}
	paths := []string{PathInstanceID, PathInstanceType, PathZone, PathRegion, PathLocalIPv4, PathHostname, PathMAC, PathMACs}
	raw := make(Raw, len(paths))
	for _, p := range paths {
		v, err := get(p)
		if err != nil {
			return Identity{}, err
		}
		raw[p] = v
	}
	// The VPC's blocks are listed under the primary interface.
	mac := strings.TrimSpace(raw[PathMAC])
	if _, err := parseMAC(mac); err != nil {
		return Parse(raw) // reports the bad MAC
	}
	v, err := get(PathMACs + mac + "/vpc-ipv4-cidr-blocks")
	if err != nil {
		return Identity{}, err
	}
	raw[KeyVPCCIDRs] = v
	return Parse(raw)
}

// Raw holds metadata answers by path.
type Raw map[string]string

// The metadata paths Parse reads.
const (
	PathInstanceID   = "instance-id"
	PathInstanceType = "instance-type"
	PathZone         = "placement/availability-zone"
	PathRegion       = "placement/region"
	PathLocalIPv4    = "local-ipv4"
	PathHostname     = "local-hostname"
	PathMAC          = "mac"
	PathMACs         = "network/interfaces/macs/"
	// KeyVPCCIDRs holds network/interfaces/macs/<primary MAC>/vpc-ipv4-cidr-blocks.
	KeyVPCCIDRs = "vpc-ipv4-cidr-blocks"
)

var (
	instanceIDRE   = regexp.MustCompile(`^i-[0-9a-f]{8}([0-9a-f]{9})?$`)
	instanceTypeRE = regexp.MustCompile(`^[a-z][a-z0-9-]*\.[a-z0-9-]+$`)
	regionRE       = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-\d+$`)
	hostnameRE     = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)
)

// Parse checks raw metadata answers and builds an Identity. Every error names
// the metadata path and the bad value.
func Parse(raw Raw) (Identity, error) {
	field := func(path string) string { return strings.TrimSpace(raw[path]) }
	var errs []error
	bad := func(path, value, want string) {
		if len(value) > 80 {
			value = value[:80] + "…"
		}
		errs = append(errs, fmt.Errorf("metadata %s: %q: %s", path, value, want))
	}

	id := Identity{
		InstanceID:       field(PathInstanceID),
		InstanceType:     field(PathInstanceType),
		AvailabilityZone: field(PathZone),
		Region:           field(PathRegion),
		Hostname:         strings.ToLower(firstField(field(PathHostname))),
	}
	if !instanceIDRE.MatchString(id.InstanceID) {
		bad(PathInstanceID, id.InstanceID, "not an instance id (i- and 8 or 17 hex digits)")
	}
	if !instanceTypeRE.MatchString(id.InstanceType) {
		bad(PathInstanceType, id.InstanceType, "not an instance type such as m5.large")
	}
	if !regionRE.MatchString(id.Region) {
		bad(PathRegion, id.Region, "not a region such as us-west-2")
	}
	if suffix, ok := strings.CutPrefix(id.AvailabilityZone, id.Region); !ok || suffix == "" || !isZoneSuffix(suffix) {
		bad(PathZone, id.AvailabilityZone, "not an availability zone of region "+id.Region)
	}
	if len(id.Hostname) > 253 || !hostnameRE.MatchString(id.Hostname) {
		bad(PathHostname, id.Hostname, "not a DNS hostname")
	}
	if ip, err := netip.ParseAddr(field(PathLocalIPv4)); err != nil || !ip.Is4() {
		bad(PathLocalIPv4, field(PathLocalIPv4), "not an IPv4 address")
	} else {
		id.PrivateIPv4 = ip
	}
	mac, err := parseMAC(field(PathMAC))
	if err != nil {
		bad(PathMAC, field(PathMAC), err.Error())
	}
	id.MAC = mac
	for line := range strings.Lines(raw[PathMACs]) {
		entry := strings.TrimSuffix(strings.TrimSpace(line), "/")
		if entry == "" {
			continue
		}
		m, err := parseMAC(entry)
		if err != nil {
			bad(PathMACs, entry, err.Error())
			continue
		}
		id.MACs = append(id.MACs, m)
	}
	for line := range strings.Lines(raw[KeyVPCCIDRs]) {
		entry := strings.TrimSpace(line)
		if entry == "" {
			continue
		}
		p, err := netip.ParsePrefix(entry)
		if err != nil || !p.Addr().Is4() || p != p.Masked() {
			bad(KeyVPCCIDRs, entry, "not an IPv4 CIDR block")
			continue
		}
		id.VPCCIDRs = append(id.VPCCIDRs, p)
	}
	if len(id.VPCCIDRs) == 0 && len(errs) == 0 {
		bad(KeyVPCCIDRs, raw[KeyVPCCIDRs], "lists no VPC CIDR block")
	}
	if len(errs) == 0 && !slices.Contains(id.MACs, id.MAC) {
		bad(PathMACs, strings.Join(id.MACs, ","), "does not list the primary MAC "+id.MAC)
	}
	if err := errors.Join(errs...); err != nil {
		return Identity{}, fmt.Errorf("invalid instance metadata: %w", err)
	}
	return id, nil
}

// firstField returns the first space-separated word: with a DHCP option set
// of several domain names, local-hostname lists one name per domain.
func firstField(s string) string {
	if f := strings.Fields(s); len(f) > 0 {
		return f[0]
	}
	return ""
}

// isZoneSuffix accepts a zone letter (us-west-2a) or a Local/Wavelength
// Zone suffix (us-west-2-lax-1a).
func isZoneSuffix(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	last := s[len(s)-1]
	return last >= 'a' && last <= 'z'
}

func parseMAC(s string) (string, error) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return "", errors.New("not a 48-bit MAC address")
	}
	return hw.String(), nil
}
