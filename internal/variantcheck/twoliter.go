// Package variantcheck checks autonode's Bottlerocket out-of-tree build
// (Twoliter.toml, the Cargo manifests of the kit, packages and variant, and
// the settings templates) without twoliter, Docker or a registry, so that
// `make test` catches what twoliter would ignore or only report deep inside
// a container build.
//
// The key allow-lists follow twoliter v0.5.0 (commit
// dbba40736e1a42c4f2715107f5baba45dfc8baab): twoliter/src/project/mod.rs
// (UnvalidatedProject, Vendor, Image) for Twoliter.toml and
// tools/buildsys/src/manifest.rs (Metadata, BuildPackage, BuildKit,
// BuildVariant, ImageLayout, ImageFeature, ExternalFile) for Cargo
// metadata. Neither rejects unknown keys, so a misspelt key is silently
// ignored there; here it is an error. Later twoliter versions only add keys
// (schema-version 2 with project-vendor, more image features), so a tree
// that passes is read the same by them.
package variantcheck

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// schema describes the keys allowed at one level of a TOML document. A nil
// schema allows any value.
type schema struct {
	// fields maps each allowed key to the schema of its value.
	fields map[string]*schema
	// anyKey is the schema of every value of a table whose keys are names
	// (vendors, image features) rather than fixed fields.
	anyKey *schema
	// required lists the keys that must be present.
	required []string
	// items is the schema of each element of an array of tables.
	items *schema
	// check validates a scalar value.
	check func(v any) error
}

func isString(v any) error {
	if _, ok := v.(string); !ok {
		return fmt.Errorf("want a string, got %T", v)
	}
	return nil
}

func isBool(v any) error {
	if _, ok := v.(bool); !ok {
		return fmt.Errorf("want true or false, got %T", v)
	}
	return nil
}

func isInt(v any) error {
	if _, ok := v.(int64); !ok {
		return fmt.Errorf("want an integer, got %T", v)
	}
	return nil
}

func isStringList(v any) error {
	list, ok := v.([]any)
	if !ok {
		return fmt.Errorf("want a list of strings, got %T", v)
	}
	for i, e := range list {
		if _, ok := e.(string); !ok {
			return fmt.Errorf("element %d: want a string, got %T", i, e)
		}
	}
	return nil
}

func oneOf(values ...string) func(any) error {
	return func(v any) error {
		s, ok := v.(string)
		if !ok || !slices.Contains(values, s) {
			return fmt.Errorf("%v: must be one of %s", v, strings.Join(values, ", "))
		}
		return nil
	}
}

func listOf(values ...string) func(any) error {
	return func(v any) error {
		if err := isStringList(v); err != nil {
			return err
		}
		for _, e := range v.([]any) {
			if err := oneOf(values...)(e); err != nil {
				return err
			}
		}
		return nil
	}
}

func scalar(check func(any) error) *schema { return &schema{check: check} }

// semverPattern is what the semver crate parses for Image.version (build
// metadata aside).
var semverPattern = regexp.MustCompile(`^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$`)

func isSemver(v any) error {
	if s, ok := v.(string); !ok || !semverPattern.MatchString(s) {
		return fmt.Errorf("%v: want a semantic version such as 1.2.3", v)
	}
	return nil
}

// image is twoliter's Image: a kit or SDK dependency.
func image() *schema {
	return &schema{
		fields:   map[string]*schema{"name": scalar(isString), "version": scalar(isSemver), "vendor": scalar(isString)},
		required: []string{"name", "version", "vendor"},
	}
}

// twoliterProject is Twoliter.toml's UnvalidatedProject at schema-version 1.
func twoliterProject() *schema {
	return &schema{
		fields: map[string]*schema{
			"schema-version": scalar(func(v any) error {
				if n, ok := v.(int64); !ok || n != 1 {
					return fmt.Errorf("%v: twoliter v0.5.0 reads schema-version 1 only", v)
				}
				return nil
			}),
			"release-version": scalar(isString),
			"sdk":             image(),
			"vendor": {anyKey: &schema{
				fields:   map[string]*schema{"registry": scalar(isString)},
				required: []string{"registry"},
			}},
			"kit": {items: image()},
		},
		required: []string{"schema-version", "release-version"},
	}
}

// imageFeatures are buildsys's ImageFeature names.
var imageFeatures = []string{
	"grub-set-private-var", "systemd-networkd", "xfs-data-partition", "erofs-root-partition",
	"uefi-secure-boot", "fips", "in-place-updates", "host-containers",
}

// cargoMetadata is the package.metadata table buildsys reads.
func cargoMetadata() *schema {
	externalFile := &schema{
		fields: map[string]*schema{
			"path": scalar(isString), "sha512": scalar(isString), "url": scalar(isString),
			"force-upstream": scalar(isBool), "bundle-modules": scalar(listOf("go")),
			"bundle-root-path": scalar(isString), "bundle-output-path": scalar(isString),
		},
		required: []string{"sha512", "url"},
	}
	features := &schema{check: isBool}
	featureTable := &schema{fields: map[string]*schema{}}
	for _, f := range imageFeatures {
		featureTable.fields[f] = features
	}
	return &schema{fields: map[string]*schema{
		"build-package": {fields: map[string]*schema{
			"external-files": {items: externalFile},
			"package-name":   scalar(isString),
			"releases-url":   scalar(isString),
			"source-groups":  scalar(isStringList),
			"variant-sensitive": scalar(func(v any) error {
				if _, ok := v.(bool); ok {
					return nil
				}
				return oneOf("platform", "runtime", "family", "flavor")(v)
			}),
			"package-features": scalar(listOf(imageFeatures...)),
		}},
		"build-kit": {
			fields:   map[string]*schema{"kit-name": scalar(isString), "vendor": scalar(isString)},
			required: []string{"vendor"},
		},
		"build-variant": {fields: map[string]*schema{
			"included-packages": scalar(isStringList),
			"image-format":      scalar(oneOf("raw", "qcow2", "vmdk")),
			"image-layout": {fields: map[string]*schema{
				"os-image-size-gib":           scalar(isInt),
				"data-image-size-gib":         scalar(isInt),
				"publish-image-size-hint-gib": scalar(isInt),
				"partition-plan":              scalar(oneOf("split", "unified")),
			}},
			"supported-arches":  scalar(listOf("x86_64", "aarch64")),
			"kernel-parameters": scalar(isStringList),
			"image-features":    featureTable,
		}},
	}}
}

// KeyError is one key or value that twoliter v0.5.0 does not accept.
type KeyError struct {
	Path   string
	Reason string
}

func (e *KeyError) Error() string { return e.Path + ": " + e.Reason }

// validate walks v against s and returns every problem, sorted by path.
func validate(path string, v any, s *schema) []error {
	if s == nil {
		return nil
	}
	if s.check != nil {
		if err := s.check(v); err != nil {
			return []error{&KeyError{path, err.Error()}}
		}
		return nil
	}
	if s.items != nil {
		list, ok := v.([]any)
		if !ok {
			return []error{&KeyError{path, fmt.Sprintf("want an array of tables, got %T", v)}}
		}
		var errs []error
		for i, e := range list {
			errs = append(errs, validate(fmt.Sprintf("%s[%d]", path, i), e, s.items)...)
		}
		return errs
	}
	table, ok := v.(map[string]any)
	if !ok {
		return []error{&KeyError{path, fmt.Sprintf("want a table, got %T", v)}}
	}
	var errs []error
	for _, k := range s.required {
		if _, ok := table[k]; !ok {
			errs = append(errs, &KeyError{join(path, k), "required"})
		}
	}
	keys := make([]string, 0, len(table))
	for k := range table {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		child, ok := s.fields[k]
		switch {
		case ok:
		case s.anyKey != nil:
			child = s.anyKey
		default:
			errs = append(errs, &KeyError{join(path, k), "unknown key (twoliter v0.5.0 would ignore it)"})
			continue
		}
		errs = append(errs, validate(join(path, k), table[k], child)...)
	}
	return errs
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// decode parses TOML into plain maps, slices and scalars.
func decode(name string, data []byte) (map[string]any, error) {
	var doc map[string]any
	if err := toml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return doc, nil
}

// CheckTwoliterProject parses a Twoliter.toml and reports every key or
// value twoliter v0.5.0 would not read as meant, each error naming the file.
func CheckTwoliterProject(name string, data []byte) error {
	doc, err := decode(name, data)
	if err != nil {
		return err
	}
	return wrapAll(name, validate("", doc, twoliterProject()))
}

// Manifest is what buildsys reads from one Cargo.toml.
type Manifest struct {
	// Name is package.name.
	Name string
	// Kind is "package", "kit" or "variant": which metadata table it has.
	Kind string
	// Metadata is package.metadata.build-<kind>.
	Metadata map[string]any
	// BuildDependencies maps each [build-dependencies] entry to its path.
	BuildDependencies map[string]string
}

// ParseManifest parses a package, kit or variant Cargo.toml, checks its
// package.metadata against buildsys's keys and the shape buildsys needs (a
// build script, a lib target, exactly one build-* table, path-only build
// dependencies), and returns what buildsys reads.
func ParseManifest(name string, data []byte) (Manifest, error) {
	doc, err := decode(name, data)
	if err != nil {
		return Manifest{}, err
	}
	var errs []error
	bad := func(path, reason string) { errs = append(errs, &KeyError{path, reason}) }
	pkg, _ := doc["package"].(map[string]any)
	m := Manifest{BuildDependencies: map[string]string{}}
	if m.Name, _ = pkg["name"].(string); m.Name == "" {
		bad("package.name", "required")
	}
	if b, _ := pkg["build"].(string); !strings.HasSuffix(b, "build.rs") {
		bad("package.build", "must name the build.rs that runs buildsys")
	}
	if lib, _ := doc["lib"].(map[string]any); lib == nil || lib["path"] == nil {
		bad("lib.path", "required: Cargo needs a lib to compile")
	}
	meta, _ := pkg["metadata"].(map[string]any)
	errs = append(errs, validate("package.metadata", meta, cargoMetadata())...)
	for _, kind := range []string{"package", "kit", "variant"} {
		if t, ok := meta["build-"+kind].(map[string]any); ok {
			if m.Kind != "" {
				bad("package.metadata", "holds both build-"+m.Kind+" and build-"+kind)
			}
			m.Kind, m.Metadata = kind, t
		}
	}
	if m.Kind == "" {
		bad("package.metadata", "needs one of build-package, build-kit, build-variant")
	}
	deps, _ := doc["build-dependencies"].(map[string]any)
	for dep, v := range deps {
		t, _ := v.(map[string]any)
		p, _ := t["path"].(string)
		if p == "" {
			bad("build-dependencies."+dep, "must be a path dependency inside the project")
			continue
		}
		m.BuildDependencies[dep] = p
	}
	return m, wrapAll(name, errs)
}

func wrapAll(name string, errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	for i, err := range errs {
		errs[i] = fmt.Errorf("%s: %w", name, err)
	}
	return errors.Join(errs...)
}
