package cloud

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/pricing"
)

// priceDoc is a Price List product document as GetProducts returns it
// (trimmed to the fields AWS always sends for EC2 compute).
func priceDoc(instanceType, usd string) string {
	return fmt.Sprintf(`{"product":{"productFamily":"Compute Instance","attributes":{"instanceType":%q,"regionCode":"us-west-2","operatingSystem":"Linux","tenancy":"Shared"},"sku":"SKU%s"},
"serviceCode":"AmazonEC2","terms":{"OnDemand":{"SKU%s.JRTCKXETXF":{"priceDimensions":{"SKU%s.JRTCKXETXF.6YS6EN2CT7":{"unit":"Hrs","endRange":"Inf","description":"$%s per On Demand Linux %s Instance Hour","appliesTo":[],"rateCode":"x","beginRange":"0","pricePerUnit":{"USD":%q}}},"sku":"SKU%s","effectiveDate":"2026-11-01T00:00:00Z","offerTermCode":"JRTCKXETXF","termAttributes":{}}}},"version":"20261101","publicationDate":"2026-11-01T00:00:00Z"}`,
		instanceType, instanceType, instanceType, instanceType, usd, instanceType, usd, instanceType)
}

// TestPricingAPI serves GetProducts over the Price List API's JSON protocol
// in two pages and reads it through the real SDK client.
func TestPricingAPI(t *testing.T) {
	t.Parallel()
	var filters []map[string]string
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Amz-Target") != "AWSPriceListService.GetProducts" {
			http.Error(w, "unexpected target "+r.Header.Get("X-Amz-Target"), http.StatusBadRequest)
			return
		}
		body, _ := io.ReadAll(r.Body)
		var in struct {
			ServiceCode string
			Filters     []map[string]string
			NextToken   string
		}
		if err := json.Unmarshal(body, &in); err != nil || in.ServiceCode != "AmazonEC2" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		filters = in.Filters
		out := map[string]any{"FormatVersion": "aws_v1"}
		switch in.NextToken {
		case "":
			out["PriceList"] = []string{priceDoc("m5.large", "0.0960000000"), priceDoc("c7g.large", "0.0725000000")}
			out["NextToken"] = "page2"
		case "page2":
			// A document without an hourly price (an upfront fee) is skipped.
			out["PriceList"] = []string{priceDoc("r5.large", "0.1260000000"), strings.Replace(priceDoc("x1.large", "5"), `"Hrs"`, `"Quantity"`, 1)}
		}
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		_ = json.NewEncoder(w).Encode(out)
	}))
	t.Cleanup(ts.Close)
	client := pricing.NewFromConfig(aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("AKID", "secret", "")},
		func(o *pricing.Options) { o.BaseEndpoint = aws.String(ts.URL) })
	got, err := PricingAPI{Client: client, Region: "us-west-2"}.OnDemandPrices(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"m5.large": 0.096, "c7g.large": 0.0725, "r5.large": 0.126}
	if !maps.Equal(got, want) {
		t.Errorf("prices = %v, want %v", got, want)
	}
	have := map[string]string{}
	for _, f := range filters {
		have[f["Field"]] = f["Value"]
	}
	for k, v := range map[string]string{"regionCode": "us-west-2", "operatingSystem": "Linux", "tenancy": "Shared", "capacitystatus": "Used", "preInstalledSw": "NA"} {
		if have[k] != v {
			t.Errorf("filter %s = %q, want %q", k, have[k], v)
		}
	}
}

func TestLoadPriceFile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		content string
		want    StaticPrices
		wantErr string
	}{
		{"yaml", "onDemand:\n  m5.large: 0.096\n  c7g.large: 0.0725\n", StaticPrices{"m5.large": 0.096, "c7g.large": 0.0725}, ""},
		{"json", `{"onDemand": {"m5.large": 0.096}}`, StaticPrices{"m5.large": 0.096}, ""},
		{"empty", "onDemand: {}\n", nil, "no onDemand prices"},
		{"negative", "onDemand:\n  m5.large: -1\n", nil, "must be above zero"},
		{"unknown field", "onDemand:\n  m5.large: 1\nspot: {}\n", nil, "unknown field"},
		{"not a number", "onDemand:\n  m5.large: cheap\n", nil, "onDemand"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "prices.yaml")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := LoadPriceFile(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), path) {
					t.Fatalf("error %v, want one naming %s with %q", err, path, tt.wantErr)
				}
				return
			}
			if err != nil || !maps.Equal(got, tt.want) {
				t.Fatalf("got %v %v, want %v", got, err, tt.want)
			}
		})
	}
	if _, err := LoadPriceFile(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("missing file accepted")
	}
}

func FuzzParsePriceListItem(f *testing.F) {
	f.Add(priceDoc("m5.large", "0.096"))
	f.Add(`{"terms":{"OnDemand":{"a":{"priceDimensions":{"b":{"unit":"Hrs","pricePerUnit":{"USD":"x"}}}}}}}`)
	f.Add(`[]`)
	f.Fuzz(func(t *testing.T, doc string) {
		name, price, err := parsePriceListItem(doc)
		if err == nil && name != "" && price != price {
			t.Fatalf("NaN price for %s", name)
		}
	})
}
