package variantcheck

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckTwoliterProject(t *testing.T) {
	const good = `schema-version = 1
release-version = "0.1.0"
[vendor.bottlerocket]
registry = "public.ecr.aws/bottlerocket"
[sdk]
name = "bottlerocket-sdk"
version = "0.76.0"
vendor = "bottlerocket"
[[kit]]
name = "bottlerocket-core-kit"
version = "14.9.0"
vendor = "bottlerocket"
`
	tests := []struct {
		name string
		toml string
		want []string // substrings of the error; none means valid
	}{
		{name: "valid", toml: good},
		{name: "minimal", toml: "schema-version = 1\nrelease-version = \"1.0.0\"\n"},
		{name: "misspelt top-level key", toml: good + "release_version = \"1\"\n", want: []string{"release_version: unknown key"}},
		{name: "misspelt kit key", toml: strings.Replace(good, `vendor = "bottlerocket"
`+"\n", "", 1) + "[[kit]]\nname = \"k\"\nversion = \"1.0.0\"\nvendr = \"v\"\n",
			want: []string{"kit[1].vendr: unknown key", "kit[1].vendor: required"}},
		{name: "schema-version 2", toml: strings.Replace(good, "schema-version = 1", "schema-version = 2", 1), want: []string{"schema-version: 2"}},
		{name: "project-vendor is a v2 key", toml: good + "project-vendor = \"x\"\n", want: []string{"project-vendor: unknown key"}},
		{name: "vendor without registry", toml: good + "[vendor.other]\nurl = \"x\"\n", want: []string{"vendor.other.registry: required", "vendor.other.url: unknown key"}},
		{name: "version not semver", toml: strings.Replace(good, `"14.9.0"`, `"14.9"`, 1), want: []string{"kit[0].version: 14.9"}},
		{name: "kit is a table, not an array", toml: "schema-version = 1\nrelease-version = \"1\"\n[kit]\nname = \"x\"\n", want: []string{"kit: want an array of tables"}},
		{name: "missing release-version", toml: "schema-version = 1\n", want: []string{"release-version: required"}},
		{name: "not TOML", toml: "schema-version = = 1\n", want: []string{"Twoliter.toml"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckTwoliterProject("Twoliter.toml", []byte(tt.toml))
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("CheckTwoliterProject: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("CheckTwoliterProject accepted it; want errors %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if len(tt.want) > 0 && strings.Contains(tt.want[0], "unknown key") {
				var ke *KeyError
				if !errors.As(err, &ke) {
					t.Errorf("error %v is not a *KeyError", err)
				}
			}
		})
	}
}

func TestParseManifest(t *testing.T) {
	const pkg = `[package]
name = "autonode-agent"
version = "0.1.0"
build = "../build.rs"
[lib]
path = "../packages.rs"
[package.metadata.build-package]
source-groups = ["autonode"]
`
	const variant = `[package]
name = "v"
build = "../build.rs"
[lib]
path = "../variants.rs"
[package.metadata.build-variant]
included-packages = ["release"]
kernel-parameters = ["quiet"]
[package.metadata.build-variant.image-features]
in-place-updates = false
[package.metadata.build-variant.image-layout]
partition-plan = "split"
[build-dependencies]
my-kit = { path = "../../kits/my-kit" }
`
	tests := []struct {
		name     string
		toml     string
		wantKind string
		want     []string
	}{
		{name: "package", toml: pkg, wantKind: "package"},
		{name: "variant", toml: variant, wantKind: "variant"},
		{name: "kit", toml: "[package]\nname = \"k\"\nbuild = \"../build.rs\"\n[lib]\npath = \"../kit.rs\"\n[package.metadata.build-kit]\nvendor = \"bottlerocket\"\n", wantKind: "kit"},
		{name: "kit without vendor", toml: "[package]\nname = \"k\"\nbuild = \"../build.rs\"\n[lib]\npath = \"../kit.rs\"\n[package.metadata.build-kit]\n", want: []string{"build-kit.vendor: required"}},
		{name: "misspelt source-groups", toml: strings.Replace(pkg, "source-groups", "source-group", 1), want: []string{"build-package.source-group: unknown key"}},
		{name: "unknown image feature", toml: strings.Replace(variant, "in-place-updates", "in-place-update", 1), want: []string{"image-features.in-place-update: unknown key"}},
		{name: "image feature not a bool", toml: strings.Replace(variant, "in-place-updates = false", "in-place-updates = \"no\"", 1), want: []string{"in-place-updates: want true or false"}},
		{name: "bad partition plan", toml: strings.Replace(variant, `"split"`, `"halves"`, 1), want: []string{"partition-plan: halves"}},
		{name: "registry build dependency", toml: variant + "other = \"1.0\"\n", want: []string{"build-dependencies.other: must be a path dependency"}},
		{name: "no metadata", toml: "[package]\nname = \"x\"\nbuild = \"../build.rs\"\n[lib]\npath = \"x.rs\"\n", want: []string{"needs one of build-package"}},
		{name: "no build script", toml: strings.Replace(pkg, "build = \"../build.rs\"\n", "", 1), want: []string{"package.build"}},
		{name: "external file without digest", toml: pkg + "[[package.metadata.build-package.external-files]]\nurl = \"https://x\"\n", want: []string{"external-files[0].sha512: required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseManifest("Cargo.toml", []byte(tt.toml))
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("ParseManifest: %v", err)
				}
				if m.Kind != tt.wantKind {
					t.Errorf("Kind = %q, want %q", m.Kind, tt.wantKind)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseManifest accepted it; want errors %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	m, err := ParseManifest("Cargo.toml", []byte(variant))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.BuildDependencies["my-kit"]; got != "../../kits/my-kit" {
		t.Errorf("BuildDependencies[my-kit] = %q", got)
	}
}
