package cloud

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/pricing"
	pricingtypes "github.com/aws/aws-sdk-go-v2/service/pricing/types"
	"sigs.k8s.io/yaml"
)

// PriceSource gives the on-demand price (USD per hour, Linux, shared
// tenancy) of each instance type in the provider's region. A type without a
// price gets no on-demand offering.
type PriceSource interface {
	OnDemandPrices(ctx context.Context) (map[string]float64, error)
}

// StaticPrices is a fixed price table: the sandbox's built-in catalog, or a
// price file.
type StaticPrices map[string]float64

// OnDemandPrices returns a copy of the table.
func (s StaticPrices) OnDemandPrices(context.Context) (map[string]float64, error) {
	return maps.Clone(map[string]float64(s)), nil
}

// priceFile is the format of LoadPriceFile:
//
//	onDemand:
//	  m5.large: 0.096
//	  c7g.large: 0.0725
type priceFile struct {
	OnDemand map[string]float64 `json:"onDemand"`
}

// LoadPriceFile reads on-demand prices from a YAML or JSON file.
func LoadPriceFile(path string) (StaticPrices, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("price file: %w", err)
	}
	var f priceFile
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return nil, fmt.Errorf("price file %s: %w", path, err)
	}
	if len(f.OnDemand) == 0 {
		return nil, fmt.Errorf("price file %s: no onDemand prices", path)
	}
	for name, p := range f.OnDemand {
		if p <= 0 {
			return nil, fmt.Errorf("price file %s: %s: price %v must be above zero", path, name, p)
		}
	}
	return StaticPrices(f.OnDemand), nil
}

// PricingAPI reads on-demand prices from the AWS Price List Query API
// (GetProducts, service AmazonEC2), which AWS serves from us-east-1 and a
// few other regions whatever region the prices are for.
type PricingAPI struct {
	Client pricing.GetProductsAPIClient
	// Region whose prices to read (us-west-2).
	Region string
}

// OnDemandPrices pages through GetProducts for Linux, shared-tenancy,
// no-preinstalled-software, in-use capacity in Region.
func (p PricingAPI) OnDemandPrices(ctx context.Context) (map[string]float64, error) {
	filter := func(field, value string) pricingtypes.Filter {
		return pricingtypes.Filter{Field: aws.String(field), Value: aws.String(value), Type: pricingtypes.FilterTypeTermMatch}
	}
	in := &pricing.GetProductsInput{
		ServiceCode:   aws.String("AmazonEC2"),
		FormatVersion: aws.String("aws_v1"),
		Filters: []pricingtypes.Filter{
			filter("regionCode", p.Region),
			filter("operatingSystem", "Linux"),
			filter("tenancy", "Shared"),
			filter("preInstalledSw", "NA"),
			filter("capacitystatus", "Used"),
		},
	}
	out := map[string]float64{}
	pages := pricing.NewGetProductsPaginator(p.Client, in)
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("reading on-demand prices for %s: %w", p.Region, err)
		}
		for _, doc := range page.PriceList {
			name, price, err := parsePriceListItem(doc)
			if err != nil {
				return nil, fmt.Errorf("reading on-demand prices for %s: %w", p.Region, err)
			}
			if name != "" && price > 0 {
				out[name] = price
			}
		}
	}
	return out, nil
}

// priceListItem is the part of a Price List product document we read.
type priceListItem struct {
	Product struct {
		Attributes struct {
			InstanceType string `json:"instanceType"`
		} `json:"attributes"`
	} `json:"product"`
	Terms struct {
		OnDemand map[string]struct {
			PriceDimensions map[string]struct {
				Unit         string            `json:"unit"`
				PricePerUnit map[string]string `json:"pricePerUnit"`
			} `json:"priceDimensions"`
		} `json:"OnDemand"`
	} `json:"terms"`
}

// parsePriceListItem returns the instance type and hourly USD price of one
// Price List document; name is "" for documents without an hourly price.
func parsePriceListItem(doc string) (name string, price float64, err error) {
	var item priceListItem
	if err := json.Unmarshal([]byte(doc), &item); err != nil {
		return "", 0, fmt.Errorf("price list document: %w", err)
	}
	name = item.Product.Attributes.InstanceType
	for _, term := range item.Terms.OnDemand {
		for _, dim := range term.PriceDimensions {
			usd, ok := dim.PricePerUnit["USD"]
			if !ok || (dim.Unit != "Hrs" && dim.Unit != "Hours") {
				continue
			}
			price, err = strconv.ParseFloat(usd, 64)
			if err != nil {
				return "", 0, fmt.Errorf("price list document for %s: price %q: %w", name, usd, err)
			}
			return name, price, nil
		}
	}
	return "", 0, nil
}
