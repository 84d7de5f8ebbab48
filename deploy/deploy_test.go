package deploy

import (
	"io/fs"
	"slices"
	"testing"
)

// TestEmbedded checks that every shipped manifest is embedded, so that a
// file added without updating the embed pattern fails here.
func TestEmbedded(t *testing.T) {
	for _, tt := range []struct {
		name string
		fsys fs.FS
		want []string
	}{
		{"crds", CRDs(), []string{"autonode.dev_nodeclaims.yaml", "autonode.dev_nodeclasses.yaml", "autonode.dev_nodediagnostics.yaml", "autonode.dev_nodepools.yaml"}},
		{"nodepools", NodePools(), []string{"default-nodeclass.yaml", "general-purpose.yaml", "system.yaml"}},
	} {
		got, err := fs.Glob(tt.fsys, "*.yaml")
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range tt.want {
			if !slices.Contains(got, w) {
				t.Errorf("%s: %s not embedded (have %v)", tt.name, w, got)
			}
		}
	}
}
