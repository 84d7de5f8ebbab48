package ec2

import (
	"context"
	"hash/fnv"
	"slices"
	"strconv"
	"time"

	"github.com/autonode/autonode/sandbox/catalog"
	"github.com/autonode/autonode/sandbox/vpc"
)

// productLinux is the only product description the sandbox prices.
const productLinux = "Linux/UNIX"

// SpotPrice returns the current spot price of a type in a zone: the one
// SetSpotPrice set, or else a stable 30-45% of the on-demand price, varying
// by type and zone the way spot markets do. ok is false for unknown types.
func (s *Server) SpotPrice(instanceType, zone string) (float64, bool) {
	t, ok := s.instanceType(instanceType)
	if !ok {
		return 0, false
	}
	s.launch.mu.Lock()
	defer s.launch.mu.Unlock()
	return s.launch.spotPrice(t, zone), true
}

// SetSpotPrice fixes the spot price of a type in a zone.
func (s *Server) SetSpotPrice(instanceType, zone string, price float64) {
	s.launch.mu.Lock()
	defer s.launch.mu.Unlock()
	s.launch.spotPrices[Offering{InstanceType: instanceType, Zone: zone, CapacityType: "spot"}] = price
}

// spotPrice is SpotPrice for a known type. Callers hold mu.
func (l *launchState) spotPrice(t catalog.InstanceType, zone string) float64 {
	if p, ok := l.spotPrices[Offering{InstanceType: t.Name, Zone: zone, CapacityType: "spot"}]; ok {
		return p
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(t.Name + "/" + zone)) // hash writes cannot fail
	discount := 0.30 + 0.15*float64(h.Sum32()%1000)/1000
	return roundPrice(t.PriceUSDHour * discount)
}

func roundPrice(p float64) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(p, 'f', 6, 64), 64)
	return v
}

type xmlSpotPrice struct {
	AvailabilityZone   string `xml:"availabilityZone"`
	AvailabilityZoneID string `xml:"availabilityZoneId"`
	InstanceType       string `xml:"instanceType"`
	ProductDescription string `xml:"productDescription"`
	SpotPrice          string `xml:"spotPrice"`
	Timestamp          string `xml:"timestamp"`
}

type describeSpotPriceHistoryResponse struct {
	SpotPriceHistorySet Items[xmlSpotPrice] `xml:"spotPriceHistorySet"`
	NextToken           string              `xml:"nextToken,omitempty"`
}

type spotRow struct {
	t    catalog.InstanceType
	zone vpc.Zone
}

// describeSpotPriceHistory answers with the current price of every matching
// (type, zone), stamped at the top of the hour: the sandbox keeps no history.
func (s *Server) describeSpotPriceHistory(_ context.Context, r *Request) (any, error) {
	for _, name := range []string{"StartTime", "EndTime"} {
		if v := r.Get(name); v != "" {
			if _, err := time.Parse(time.RFC3339, v); err != nil {
				return nil, Errorf(CodeInvalidParameterValue, "Invalid value '%s' for %s", v, name)
			}
		}
	}
	types := slices.Clone(s.catalog)
	if names := r.List("InstanceType"); len(names) > 0 {
		types = slices.DeleteFunc(types, func(t catalog.InstanceType) bool { return !slices.Contains(names, t.Name) })
	}
	if products := r.List("ProductDescription"); len(products) > 0 && !slices.Contains(products, productLinux) {
		types = nil
	}
	var rows []spotRow
	for _, t := range types {
		for _, z := range s.model.Zones() {
			if az := r.Get("AvailabilityZone"); az == "" || az == z.Name {
				rows = append(rows, spotRow{t, z})
			}
		}
	}
	rows, err := applyFilters(rows, r.Filters(), fieldFuncs[spotRow]{
		"instance-type":       func(x spotRow) []string { return one(x.t.Name) },
		"availability-zone":   func(x spotRow) []string { return one(x.zone.Name) },
		"product-description": func(spotRow) []string { return one(productLinux) },
	}, nil)
	if err != nil {
		return nil, err
	}
	page, next, err := paginate(r, rows, pageLimits{min: 5, max: 1000, def: 1000})
	if err != nil {
		return nil, err
	}
	stamp := timestamp(s.launch.now().Truncate(time.Hour))
	out := make([]xmlSpotPrice, len(page))
	s.launch.mu.Lock()
	for i, x := range page {
		out[i] = xmlSpotPrice{
			AvailabilityZone: x.zone.Name, AvailabilityZoneID: x.zone.ID, InstanceType: x.t.Name,
			ProductDescription: productLinux, SpotPrice: strconv.FormatFloat(s.launch.spotPrice(x.t, x.zone.Name), 'f', 6, 64),
			Timestamp: stamp,
		}
	}
	s.launch.mu.Unlock()
	return describeSpotPriceHistoryResponse{SpotPriceHistorySet: ItemsOf(out), NextToken: next}, nil
}
