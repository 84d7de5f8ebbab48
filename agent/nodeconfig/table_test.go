package nodeconfig

import (
	"encoding/csv"
	"os"
	"testing"
)

// instanceTable reads the shared instance table (shared/data beside the
// checkout) as one column-name-to-value map per instance type. It skips
// the test when the table is absent, and fails it when CI=true.
func instanceTable(t *testing.T) []map[string]string {
	t.Helper()
	f, err := os.Open("../../../shared/data/ec2-instance-types.csv")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("shared instance table: %v", err)
		}
		t.Skipf("shared instance table not beside the checkout: %v", err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf("shared instance table: %v", err)
	}
	if len(rows) < 2 {
		t.Fatalf("shared instance table has %d rows", len(rows))
	}
	out := make([]map[string]string, 0, len(rows)-1)
	for _, row := range rows[1:] {
		m := make(map[string]string, len(row))
		for i, v := range row {
			m[rows[0][i]] = v
		}
		out = append(out, m)
	}
	return out
}
