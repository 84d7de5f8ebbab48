package variantcheck

import (
	"strings"
	"testing"
)

func TestRender(t *testing.T) {
	settings := map[string]any{"settings": map[string]any{
		"kubernetes": map[string]any{
			"cluster-name":   "prod",
			"cluster-dns-ip": []any{"169.254.20.10", "10.100.0.10"},
			"eviction-hard":  map[string]any{"nodefs.available": "10%", "memory.available": "100Mi"},
			"single-dns-ip":  "10.100.0.10",
			"max-pods":       int64(58),
		},
	}}
	const std = "[required-extensions]\nstd = { version = \"v1\", helpers = [\"default\"] }\n+++\n"
	tests := []struct {
		name string
		src  string
		want string   // exact output
		errs []string // substrings of the error
	}{
		{name: "bare setting", src: "[required-extensions]\nkubernetes = \"v1\"\n+++\nname: {{settings.kubernetes.cluster-name}}\n", want: "name: prod\n"},
		{name: "missing setting fails", src: "[required-extensions]\n+++\n{{settings.kubernetes.cluster-nmae}}\n", errs: []string{"cluster-nmae}}: missing setting"}},
		{name: "missing setting in a branch that does not render", src: "[required-extensions]\n+++\n{{#unless settings.kubernetes.cluster-name}}{{settings.kubernetes.nope}}{{/unless}}ok", want: "ok"},
		{name: "missing setting in a branch that renders", src: "[required-extensions]\n+++\n{{#if settings.kubernetes.cluster-name}}{{settings.kubernetes.nope}}{{/if}}", errs: []string{"nope}}: missing setting"}},
		{name: "missing setting inside #if is fine", src: "[required-extensions]\n+++\n{{#if settings.kubernetes.nope}}x{{settings.kubernetes.nope}}{{/if}}ok", want: "ok"},
		{name: "default helper with a missing value", src: std + "{{default \"cluster.local\" settings.kubernetes.cluster-domain}}", want: "cluster.local"},
		{name: "default helper with a value", src: std + "{{default 110 settings.kubernetes.max-pods}}", want: "58"},
		{name: "undeclared helper", src: "[required-extensions]\n+++\n{{default 1 settings.x}}", errs: []string{`helper "default" is neither`}},
		{name: "raymond-only helper", src: "[required-extensions]\n+++\n{{#equal 1 1}}x{{/equal}}", errs: []string{`helper "equal"`}},
		{name: "helper without stand-in", src: "[required-extensions]\nstd = { version = \"v1\", helpers = [\"base64_decode\"] }\n+++\nx", errs: []string{"std.base64_decode has no stand-in"}},
		{name: "helpers of an extension not required", src: "[required-extensions]\nstd = \"v1\"\n+++\nx", want: "x"},
		{name: "syntax error", src: "[required-extensions]\n+++\n{{#if settings.x}}unclosed\n", errs: []string{"template body"}},
		{name: "no front matter", src: "{{settings.x}}", errs: []string{"no front matter"}},
		{name: "bad front matter", src: "[required-extensions]\nstd = 3\n+++\nx", errs: []string{"want a version string or a table"}},
		{name: "unknown front matter table", src: "[extensions]\n+++\nx", errs: []string{"front matter"}},
		{name: "each over a list with eq", src: "[required-extensions]\n+++\n{{#each settings.kubernetes.cluster-dns-ip}}{{#unless (eq this \"169.254.20.10\")}}[{{this}}]{{/unless}}{{/each}}", want: "[10.100.0.10]"},
		{name: "each over a string takes else", src: "[required-extensions]\n+++\n{{#each settings.kubernetes.single-dns-ip}}[{{this}}]{{else}}({{settings.kubernetes.single-dns-ip}}){{/each}}", want: "(10.100.0.10)"},
		{name: "each over a map in key order", src: "[required-extensions]\n+++\n{{#each settings.kubernetes.eviction-hard}}{{@key}}={{this}};{{/each}}", want: "memory.available=100Mi;nodefs.available=10%;"},
		{name: "settings path inside each", src: "[required-extensions]\n+++\n{{#each settings.kubernetes.cluster-dns-ip}}{{settings.kubernetes.cluster-name}}{{/each}}", errs: []string{"resolves against the item"}},
		{name: "undeclared helper in a subexpression", src: "[required-extensions]\n+++\n{{#if (is_array settings.x)}}y{{/if}}", errs: []string{`helper "is_array"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := RenderFile("t", []byte(tt.src), settings)
			if len(tt.errs) == 0 {
				if err != nil {
					t.Fatalf("RenderFile: %v", err)
				}
				if out != tt.want {
					t.Errorf("output %q, want %q", out, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("RenderFile rendered %q; want an error mentioning %q", out, tt.errs)
			}
			for _, w := range tt.errs {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}
