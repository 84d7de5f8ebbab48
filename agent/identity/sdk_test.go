package identity

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"golang.org/x/sys/unix"

	"github.com/autonode/autonode/sandbox/privileged"
)

// helperEnv marks the test binary's re-execution as TestHelperGoSDK.
const helperEnv = "AUTONODE_IDENTITY_SDK_HELPER"

// sdkEnv is a clean environment that points the SDKs' container credential
// provider at url with the token in tokenFile, and nowhere else.
func sdkEnv(t *testing.T, url, tokenFile string) []string {
	t.Helper()
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") {
			env = append(env, kv)
		}
	}
	return append(env,
		"AWS_CONTAINER_CREDENTIALS_FULL_URI="+url,
		"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE="+tokenFile,
		"AWS_REGION="+testRegion,
		"AWS_CONFIG_FILE="+os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE="+os.DevNull,
		"AWS_EC2_METADATA_DISABLED=true",
	)
}

func writeToken(t *testing.T, token string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "eks-pod-identity-token")
	if err := os.WriteFile(p, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestGoSDKDefaultChain runs aws-sdk-go-v2's default credential chain in a
// subprocess with the Pod Identity environment of a pod: it must get the
// credentials the emulator issued, then refreshed ones after they expire.
func TestGoSDKDefaultChain(t *testing.T) {
	e := newEnv(t, envOptions{
		credDuration: 3 * time.Second,
		cache:        CacheOptions{MinRemaining: 500 * time.Millisecond, RefreshInterval: 50 * time.Millisecond, RefreshQPS: 100},
	})
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestHelperGoSDK$", "-test.count=1")
	cmd.Env = append(sdkEnv(t, e.url, writeToken(t, e.mint(t, "ns-a", "sa-a"))), helperEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	first, second := field(string(out), "FIRST"), field(string(out), "SECOND")
	issued := map[string]bool{}
	for _, c := range e.emu.Issued() {
		issued[c.AccessKeyID] = true
	}
	if !issued[first] || !issued[second] || first == second {
		t.Errorf("the SDK got %q then %q; want two different issued keys\n%s", first, second, out)
	}
	if src := field(string(out), "SOURCE"); src != "CredentialsEndpointProvider" {
		t.Errorf("credential source = %q, want the container endpoint provider", src)
	}
}

// TestHelperGoSDK is the subprocess of TestGoSDKDefaultChain.
func TestHelperGoSDK(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("helper process of TestGoSDKDefaultChain")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c1, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("FIRST=%s\nSOURCE=%s\n", c1.AccessKeyID, c1.Source)
	for {
		c2, err := cfg.Credentials.Retrieve(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if c2.AccessKeyID != c1.AccessKeyID {
			fmt.Printf("SECOND=%s\n", c2.AccessKeyID)
			return
		}
		select {
		case <-ctx.Done():
			t.Fatal("credentials never refreshed")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// field returns the value of the line "name=value" in out.
func field(out, name string) string {
	for line := range strings.Lines(out) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+"="); ok {
			return v
		}
	}
	return ""
}

// jsScript asks the default provider chain of the AWS SDK for JavaScript v3
// for credentials, as a pod's Node.js application would.
const jsScript = `
const { fromNodeProviderChain } = require("@aws-sdk/credential-providers");
fromNodeProviderChain()().then(
  (c) => { console.log("KEY=" + c.accessKeyId); console.log("EXPIRATION=" + c.expiration.toISOString()); },
  (e) => { console.error(e); process.exit(1); });
`

// TestJavaScriptSDK runs @aws-sdk/credential-providers with Node.js against
// the endpoint, from the host netns on a loopback address (the JavaScript
// SDK accepts 127.0.0.0/8 as it does 169.254.170.23).
func TestJavaScriptSDK(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		privileged.Missing(t, "node", err)
	}
	modules := jsModules(t)
	e := newEnv(t, envOptions{})
	script := filepath.Join(t.TempDir(), "creds.js")
	if err := os.WriteFile(script, []byte(jsScript), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), node, script)
	cmd.Env = append(sdkEnv(t, e.url, writeToken(t, e.mint(t, "ns-b", "sa-b"))), "NODE_PATH="+modules, "HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	issued := e.emu.Issued()
	if len(issued) != 1 {
		t.Fatalf("issued %d credentials, want 1", len(issued))
	}
	if got := field(string(out), "KEY"); got != issued[0].AccessKeyID {
		t.Errorf("the JavaScript SDK printed key %q, want %q\n%s", got, issued[0].AccessKeyID, out)
	}
	if exp := field(string(out), "EXPIRATION"); !strings.HasPrefix(exp, issued[0].Expiration.UTC().Format("2006-01-02T15:04:05")) {
		t.Errorf("expiration %q, want %s", exp, issued[0].Expiration.UTC())
	}
}

// jsModules installs testdata/jsclient's locked packages with `npm ci` once
// per lock file, into $XDG_CACHE_HOME/autonode/jsclient/<lock hash>
// (~/.cache when unset), outside the repository, and returns its
// node_modules. An flock serializes concurrent test processes; the install
// goes to a temporary folder renamed into place, so a half-done one is
// never used. Without npm or the registry it skips, or fails when CI=true.
func jsModules(t *testing.T) string {
	t.Helper()
	src := filepath.Join("testdata", "jsclient")
	lock, err := os.ReadFile(filepath.Join(src, "package-lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(lock)
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Fatal(err)
		}
		cache = filepath.Join(home, ".cache")
	}
	parent := filepath.Join(cache, "autonode", "jsclient")
	dir := filepath.Join(parent, hex.EncodeToString(sum[:8]))
	modules := filepath.Join(dir, "node_modules")
	marker := filepath.Join(modules, "@aws-sdk", "credential-providers", "package.json")
	if _, err := os.Stat(marker); err == nil {
		return modules
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	lf, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer unix.Flock(int(lf.Fd()), unix.LOCK_UN)
	if _, err := os.Stat(marker); err == nil {
		return modules // another process installed it meanwhile
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		privileged.Missing(t, "npm", err)
	}
	tmp, err := os.MkdirTemp(parent, "install-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	for _, f := range []string{"package.json", "package-lock.json"} {
		if err := copyFile(filepath.Join(src, f), filepath.Join(tmp, f)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund")
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		privileged.Missing(t, "npm packages", fmt.Errorf("npm ci: %w\n%s", err, out))
	}
	if err := os.Rename(tmp, dir); err != nil && !errors.Is(err, os.ErrExist) {
		t.Fatal(err)
	}
	return modules
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
