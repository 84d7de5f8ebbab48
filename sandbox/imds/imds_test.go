package imds

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	sdkimds "github.com/aws/aws-sdk-go-v2/feature/ec2/imds"

	"github.com/autonode/autonode/sandbox/vpc"
)

// clock is a settable clock for token expiry.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type fixture struct {
	model *vpc.Model
	inst  vpc.Instance
	eni   vpc.ENI
	clock *clock
	url   string
}

const role = "autonode-node-role"

func newFixture(t *testing.T) fixture {
	t.Helper()
	clk := &clock{now: time.Now()}
	launched := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	m, err := vpc.New(vpc.Config{Now: func() time.Time { return launched }})
	if err != nil {
		t.Fatal(err)
	}
	inst, err := m.LaunchInstance("c6g.large", m.Subnets()[1].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	eni, err := m.ENI(inst.ENIIDs[0])
	if err != nil {
		t.Fatal(err)
	}
	srv := New(m, inst.ID, Options{
		Now:         clk.Now,
		RoleName:    role,
		Credentials: credentials.NewStaticCredentialsProvider("AKIDNODE", "node-secret", "node-session"),
	})
	ts := httptest.NewServer(srv) // listens on 127.0.0.1
	t.Cleanup(ts.Close)
	return fixture{model: m, inst: inst, eni: eni, clock: clk, url: ts.URL}
}

func (f fixture) client() *sdkimds.Client {
	return sdkimds.New(sdkimds.Options{Endpoint: f.url})
}

func getMetadata(t *testing.T, c *sdkimds.Client, path string) string {
	t.Helper()
	out, err := c.GetMetadata(t.Context(), &sdkimds.GetMetadataInput{Path: path})
	if err != nil {
		t.Fatalf("GetMetadata(%s): %v", path, err)
	}
	defer out.Content.Close()
	b, err := io.ReadAll(out.Content)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return string(b)
}

func TestMetadataThroughSDK(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c := f.client()
	mac := f.eni.MAC
	macDir := "network/interfaces/macs/" + mac + "/"
	subnet, _ := f.model.Subnet(f.inst.SubnetID)
	tests := []struct{ path, want string }{
		{"", "ami-id\nhostname\niam/\ninstance-id\ninstance-type\nlocal-hostname\nlocal-ipv4\nmac\nnetwork/\nplacement/"},
		{"instance-id", f.inst.ID},
		{"instance-type", "c6g.large"},
		{"ami-id", f.inst.ImageID},
		{"placement/", "availability-zone\navailability-zone-id\nregion"},
		{"placement/availability-zone", "us-west-2b"},
		{"placement/availability-zone-id", "usw2-az2"},
		{"placement/region", "us-west-2"},
		{"local-ipv4", "10.0.16.4"},
		{"local-hostname", "ip-10-0-16-4.us-west-2.compute.internal"},
		{"hostname", "ip-10-0-16-4.us-west-2.compute.internal"},
		{"mac", mac},
		{"network/interfaces/macs/", mac + "/"},
		{macDir + "device-number", "0"},
		{macDir + "interface-id", f.eni.ID},
		{macDir + "subnet-id", f.inst.SubnetID},
		{macDir + "subnet-ipv4-cidr-block", subnet.CIDR.String()},
		{macDir + "vpc-id", f.inst.VPCID},
		{macDir + "vpc-ipv4-cidr-block", "10.0.0.0/16"},
		{macDir + "vpc-ipv4-cidr-blocks", "10.0.0.0/16"},
		{macDir + "local-ipv4s", "10.0.16.4"},
		{macDir + "security-group-ids", f.eni.SecurityGroupIDs[0]},
		{macDir + "owner-id", "111122223333"},
		{"iam/", "info\nsecurity-credentials/"},
		{"iam/security-credentials/", role},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			t.Parallel()
			if got := getMetadata(t, c, tt.path); got != tt.want {
				t.Errorf("%s = %q, want %q", tt.path, got, tt.want)
			}
		})
	}
}

func TestCredentialsJSON(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var creds map[string]string
	if err := json.Unmarshal([]byte(getMetadata(t, f.client(), "iam/security-credentials/"+role)), &creds); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"Code", "LastUpdated", "Type", "AccessKeyId", "SecretAccessKey", "Token", "Expiration"} {
		if creds[k] == "" {
			t.Errorf("credentials lack %s: %v", k, creds)
		}
	}
	if creds["Code"] != "Success" || creds["Type"] != "AWS-HMAC" {
		t.Errorf("credentials = %v", creds)
	}
}

func TestIdentityDocumentAndIAMInfo(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c := f.client()
	doc, err := c.GetInstanceIdentityDocument(t.Context(), nil)
	if err != nil {
		t.Fatalf("GetInstanceIdentityDocument: %v", err)
	}
	want := sdkimds.InstanceIdentityDocument{
		AccountID: "111122223333", Architecture: "arm64", AvailabilityZone: "us-west-2b", ImageID: f.inst.ImageID,
		InstanceID: f.inst.ID, InstanceType: "c6g.large", PendingTime: f.inst.LaunchTime, PrivateIP: "10.0.16.4",
		Region: "us-west-2", Version: "2017-09-30",
	}
	if got := doc.InstanceIdentityDocument; got.AccountID != want.AccountID || got.Architecture != want.Architecture ||
		got.AvailabilityZone != want.AvailabilityZone || got.ImageID != want.ImageID || got.InstanceID != want.InstanceID ||
		got.InstanceType != want.InstanceType || !got.PendingTime.Equal(want.PendingTime) || got.PrivateIP != want.PrivateIP ||
		got.Region != want.Region || got.Version != want.Version {
		t.Errorf("identity document = %+v\nwant %+v", got, want)
	}
	info, err := c.GetIAMInfo(t.Context(), nil)
	if err != nil {
		t.Fatalf("GetIAMInfo: %v", err)
	}
	if info.Code != "Success" || info.InstanceProfileArn != "arn:aws:iam::111122223333:instance-profile/"+role {
		t.Errorf("iam info = %+v", info.IAMInfo)
	}
	region, err := c.GetRegion(t.Context(), nil)
	if err != nil || region.Region != "us-west-2" {
		t.Errorf("GetRegion = %+v, %v", region, err)
	}
}

func TestEC2RoleCredentials(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	p := ec2rolecreds.New(func(o *ec2rolecreds.Options) { o.Client = f.client() })
	creds, err := p.Retrieve(t.Context())
	if err != nil {
		t.Fatalf("Retrieve: %v", err)
	}
	if creds.AccessKeyID != "AKIDNODE" || creds.SecretAccessKey != "node-secret" || creds.SessionToken != "node-session" || !creds.CanExpire {
		t.Errorf("credentials = %+v", creds)
	}
}

// TestDefaultCredentialChain checks that the SDK's default chain, with no
// environment or shared-file credentials, lands on IMDS and gets the node role.
// It sets environment variables, so it cannot run in parallel.
func TestDefaultCredentialChain(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_WEB_IDENTITY_TOKEN_FILE",
		"AWS_ROLE_ARN", "AWS_EC2_METADATA_DISABLED", "AWS_EC2_METADATA_SERVICE_ENDPOINT"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_CONFIG_FILE", dir+"/config")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", dir+"/credentials")
	cfg, err := config.LoadDefaultConfig(t.Context(), config.WithRegion("us-west-2"), config.WithEC2IMDSEndpoint(f.url))
	if err != nil {
		t.Fatalf("LoadDefaultConfig: %v", err)
	}
	creds, err := cfg.Credentials.Retrieve(t.Context())
	if err != nil {
		t.Fatalf("Retrieve: %v", err)
	}
	if creds.AccessKeyID != "AKIDNODE" || creds.Source != ec2rolecreds.ProviderName {
		t.Errorf("credentials = %+v", creds)
	}
}

func TestModelChangesShowUp(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c := f.client()
	dir := "network/interfaces/macs/" + f.eni.MAC + "/"
	if _, err := c.GetMetadata(t.Context(), &sdkimds.GetMetadataInput{Path: dir + "ipv4-prefix"}); err == nil {
		t.Error("ipv4-prefix exists before any prefix is delegated")
	}
	ip, err := f.model.AssignPrivateIP(f.eni.ID)
	if err != nil {
		t.Fatal(err)
	}
	prefix, err := f.model.AssignIPv4Prefix(f.eni.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := getMetadata(t, c, dir+"local-ipv4s"), "10.0.16.4\n"+ip.String(); got != want {
		t.Errorf("local-ipv4s = %q, want %q", got, want)
	}
	if got := getMetadata(t, c, dir+"ipv4-prefix"); got != prefix.String() {
		t.Errorf("ipv4-prefix = %q, want %q", got, prefix)
	}
	if got := getMetadata(t, c, "local-ipv4"); got != "10.0.16.4" {
		t.Errorf("local-ipv4 = %q after adding a secondary address", got)
	}
}

// rawRequest sends one request without the SDK, for the protocol's error paths.
func rawRequest(t *testing.T, method, url string, header map[string]string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp.Header
}

func TestTokenProtocol(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	tokenURL := f.url + "/latest/api/token"
	tests := []struct {
		name   string
		method string
		header map[string]string
		want   int
	}{
		{"ttl 1", http.MethodPut, map[string]string{ttlHeader: "1"}, http.StatusOK},
		{"ttl max", http.MethodPut, map[string]string{ttlHeader: "21600"}, http.StatusOK},
		{"ttl 0", http.MethodPut, map[string]string{ttlHeader: "0"}, http.StatusBadRequest},
		{"ttl over max", http.MethodPut, map[string]string{ttlHeader: "21601"}, http.StatusBadRequest},
		{"ttl negative", http.MethodPut, map[string]string{ttlHeader: "-5"}, http.StatusBadRequest},
		{"ttl not a number", http.MethodPut, map[string]string{ttlHeader: "soon"}, http.StatusBadRequest},
		{"ttl missing", http.MethodPut, nil, http.StatusBadRequest},
		{"forwarded", http.MethodPut, map[string]string{ttlHeader: "60", "X-Forwarded-For": "203.0.113.9"}, http.StatusForbidden},
		{"get token", http.MethodGet, map[string]string{ttlHeader: "60"}, http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, body, hdr := rawRequest(t, tt.method, tokenURL, tt.header)
			if code != tt.want {
				t.Fatalf("status = %d, want %d", code, tt.want)
			}
			if code == http.StatusOK && (body == "" || hdr.Get(ttlHeader) != tt.header[ttlHeader]) {
				t.Errorf("token %q ttl header %q", body, hdr.Get(ttlHeader))
			}
		})
	}
}

func TestMetadataNeedsValidToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	idURL := f.url + "/latest/meta-data/instance-id"
	_, token, _ := rawRequest(t, http.MethodPut, f.url+"/latest/api/token", map[string]string{ttlHeader: "10"})

	if code, _, _ := rawRequest(t, http.MethodGet, idURL, nil); code != http.StatusUnauthorized {
		t.Errorf("no token: status %d, want 401", code)
	}
	if code, _, _ := rawRequest(t, http.MethodGet, idURL, map[string]string{tokenHeader: "forged"}); code != http.StatusUnauthorized {
		t.Errorf("unknown token: status %d, want 401", code)
	}
	if code, body, _ := rawRequest(t, http.MethodGet, idURL, map[string]string{tokenHeader: token}); code != http.StatusOK || body != f.inst.ID {
		t.Errorf("valid token: %d %q", code, body)
	}
	if code, _, _ := rawRequest(t, http.MethodGet, f.url+"/latest/meta-data/no-such-key", map[string]string{tokenHeader: token}); code != http.StatusNotFound {
		t.Errorf("unknown path: status %d, want 404", code)
	}
	if code, _, _ := rawRequest(t, http.MethodGet, f.url+"/latest/meta-data/instance-id/deeper", map[string]string{tokenHeader: token}); code != http.StatusNotFound {
		t.Errorf("path below a leaf: status %d, want 404", code)
	}
	f.clock.Advance(11 * time.Second)
	if code, _, _ := rawRequest(t, http.MethodGet, idURL, map[string]string{tokenHeader: token}); code != http.StatusUnauthorized {
		t.Errorf("expired token: status %d, want 401", code)
	}
}

func TestNoRoleHasNoIAMTree(t *testing.T) {
	t.Parallel()
	m, err := vpc.New(vpc.Config{})
	if err != nil {
		t.Fatal(err)
	}
	inst, _ := m.LaunchInstance("m5.large", "", nil)
	ts := httptest.NewServer(New(m, inst.ID, Options{}))
	t.Cleanup(ts.Close)
	c := sdkimds.New(sdkimds.Options{Endpoint: ts.URL})
	if listing := getMetadata(t, c, ""); strings.Contains(listing, "iam/") {
		t.Errorf("listing without a role contains iam/: %q", listing)
	}
	if _, err := c.GetIAMInfo(t.Context(), nil); err == nil {
		t.Error("GetIAMInfo succeeded without a role")
	}
}

// TestAttachedENITree reads the tree of a second ENI with raw requests as it
// is attached, given addresses and a prefix, trimmed and detached.
func TestAttachedENITree(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	_, token, _ := rawRequest(t, http.MethodPut, f.url+"/latest/api/token", map[string]string{ttlHeader: "60"})
	get := func(path string) (int, string) {
		t.Helper()
		code, body, _ := rawRequest(t, http.MethodGet, f.url+"/latest/meta-data/"+path, map[string]string{tokenHeader: token})
		return code, body
	}
	limits := func(string) vpc.Limits { return vpc.Limits{MaxENIs: 3, IPv4PerENI: 10} }
	eni, err := f.model.CreateENI(vpc.ENISpec{SubnetID: f.inst.SubnetID}, limits)
	if err != nil {
		t.Fatal(err)
	}
	dir := "network/interfaces/macs/" + eni.MAC + "/"
	if code, _ := get(dir); code != http.StatusNotFound {
		t.Errorf("unattached ENI: status %d, want 404", code)
	}
	if _, err := f.model.AttachENI(eni.ID, f.inst.ID, 1, 0, limits); err != nil {
		t.Fatal(err)
	}
	got, err := f.model.AssignAddresses(eni.ID, vpc.AddressRequest{Count: 2, PrefixCount: 1}, limits)
	if err != nil {
		t.Fatal(err)
	}
	subnet, _ := f.model.Subnet(f.inst.SubnetID)
	ips := []string{eni.PrimaryIP().String(), got.Addresses[0].String(), got.Addresses[1].String()}
	tests := []struct{ path, want string }{
		{"network/interfaces/macs/", strings.Join(sortedMACs(f.eni.MAC, eni.MAC), "\n")},
		{dir + "device-number", "1"},
		{dir + "network-card", "0"},
		{dir + "interface-id", eni.ID},
		{dir + "local-ipv4s", strings.Join(ips, "\n")},
		{dir + "ipv4-prefix", got.Prefixes[0].String()},
		{dir + "subnet-id", f.inst.SubnetID},
		{dir + "subnet-ipv4-cidr-block", subnet.CIDR.String()},
		{dir + "vpc-ipv4-cidr-blocks", "10.0.0.0/16"},
		{dir + "local-hostname", f.model.PrivateDNSName(eni.PrimaryIP())},
		{"mac", f.eni.MAC}, // still the primary ENI's
	}
	for _, tt := range tests {
		if code, body := get(tt.path); code != http.StatusOK || body != tt.want {
			t.Errorf("%s = %d %q, want %q", tt.path, code, body, tt.want)
		}
	}

	if err := f.model.UnassignAddresses(eni.ID, got.Addresses[:1], got.Prefixes); err != nil {
		t.Fatal(err)
	}
	if code, body := get(dir + "local-ipv4s"); body != ips[0]+"\n"+ips[2] {
		t.Errorf("local-ipv4s after unassign = %d %q", code, body)
	}
	if code, _ := get(dir + "ipv4-prefix"); code != http.StatusNotFound {
		t.Errorf("ipv4-prefix after unassign: status %d, want 404", code)
	}

	e, _ := f.model.ENI(eni.ID)
	if err := f.model.DetachENI(e.Attachment.ID, false); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(dir + "interface-id"); code != http.StatusNotFound {
		t.Errorf("detached ENI: status %d, want 404", code)
	}
	if _, body := get("network/interfaces/macs/"); body != f.eni.MAC+"/" {
		t.Errorf("macs after detach = %q", body)
	}
}

func sortedMACs(macs ...string) []string {
	out := make([]string, len(macs))
	for i, m := range macs {
		out[i] = m + "/"
	}
	slices.Sort(out)
	return out
}
