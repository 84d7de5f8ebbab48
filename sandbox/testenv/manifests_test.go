package testenv

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadManifests(t *testing.T) {
	tests := []struct {
		name      string
		content   string
		wantKinds []string
		wantErr   string
	}{
		{name: "empty file", content: ""},
		{name: "comments and separators only", content: "# nothing\n---\n---\n"},
		{
			name:      "documents around empty ones",
			content:   "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\n\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: b\n",
			wantKinds: []string{"ConfigMap", "Secret"},
		},
		{name: "json", content: `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"n"}}`, wantKinds: []string{"Namespace"}},
		{name: "missing kind", content: "apiVersion: v1\nmetadata:\n  name: a\n", wantErr: "document 1: no kind"},
		{name: "bad yaml in second document", content: "apiVersion: v1\nkind: A\n---\n: : :\n", wantErr: "document 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "m.yaml")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			objs, err := readManifests(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), path) {
					t.Fatalf("error %v, want one naming %s and %q", err, path, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var kinds []string
			for _, o := range objs {
				kinds = append(kinds, o.GetKind())
			}
			if strings.Join(kinds, ",") != strings.Join(tt.wantKinds, ",") {
				t.Errorf("kinds = %v, want %v", kinds, tt.wantKinds)
			}
		})
	}
	if _, err := readManifests(filepath.Join(t.TempDir(), "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want a not-exist error", err)
	}
}
