package ec2

import (
	"slices"
	"testing"
)

func TestParseQueryLists(t *testing.T) {
	t.Parallel()
	r, err := ParseQuery("Action=DescribeInstances&Version=2016-11-15&InstanceId.2=i-b&InstanceId.1=i-a&InstanceId.10=i-c" +
		"&InstanceId.0=bad&InstanceId.01=bad&InstanceId.x=bad" +
		"&Filter.1.Name=tag%3Aa&Filter.1.Value.1=x&Filter.1.Value.2=y&Filter.3.Name=instance-type&Filter.3.Value.1=m5.*" +
		"&TagSpecification.1.ResourceType=network-interface&TagSpecification.1.Tag.1.Key=k&TagSpecification.1.Tag.1.Value=v" +
		"&TagSpecification.1.Tag.2.Key=k2&MaxResults=7")
	if err != nil {
		t.Fatal(err)
	}
	if r.Action != "DescribeInstances" || r.Version != "2016-11-15" {
		t.Errorf("action/version = %s/%s", r.Action, r.Version)
	}
	if got := r.List("InstanceId"); !slices.Equal(got, []string{"i-a", "i-b", "i-c"}) {
		t.Errorf("InstanceId = %v", got)
	}
	filters := r.Filters()
	if len(filters) != 2 || filters[0].Name != "tag:a" || !slices.Equal(filters[0].Values, []string{"x", "y"}) || filters[1].Name != "instance-type" {
		t.Errorf("filters = %+v", filters)
	}
	specs := r.TagSpecifications()
	if len(specs) != 1 || specs[0].ResourceType != "network-interface" || !slices.Equal(specs[0].Tags, []Tag{{"k", "v"}, {"k2", ""}}) {
		t.Errorf("tag specifications = %+v", specs)
	}
	if n, ok, err := r.Int("MaxResults"); n != 7 || !ok || err != nil {
		t.Errorf("MaxResults = %d %v %v", n, ok, err)
	}
	if _, ok, _ := r.Int("Missing"); ok {
		t.Error("Missing reported as set")
	}
}

func TestParseQueryErrors(t *testing.T) {
	t.Parallel()
	for _, body := range []string{"", "Version=1", "Action=%zz", "Action="} {
		t.Run(body, func(t *testing.T) {
			t.Parallel()
			if _, err := ParseQuery(body); err == nil {
				t.Errorf("ParseQuery(%q) succeeded", body)
			}
		})
	}
}

func TestWildcard(t *testing.T) {
	t.Parallel()
	tests := []struct {
		p, s string
		want bool
	}{
		{"m5.*", "m5.large", true},
		{"m5.*", "m5d.large", false},
		{"*", "", true},
		{"", "", true},
		{"?5.large", "m5.large", true},
		{"*.large", "c6g.large", true},
		{"c*g.*", "c6g.large", true},
		{"m5.large", "m5.larg", false},
		{"a*b*c", "aXbYbZc", true},
		{"a*b*c", "aXbYbZ", false},
	}
	for _, tt := range tests {
		if got := wildcard(tt.p, tt.s); got != tt.want {
			t.Errorf("wildcard(%q, %q) = %v, want %v", tt.p, tt.s, got, tt.want)
		}
	}
}

// FuzzParseQuery feeds arbitrary bodies to the parser and its list
// accessors, which read untrusted HTTP input.
func FuzzParseQuery(f *testing.F) {
	f.Add("Action=DescribeInstances&Version=2016-11-15&InstanceId.1=i-0123456789abcdef0&Filter.1.Name=tag%3Ak&Filter.1.Value.1=v")
	f.Add("Action=X&TagSpecification.1.Tag.1.Key=a&TagSpecification.99999999999999999999.Tag.1.Key=b&Filter.-1.Name=x")
	f.Add("Action=X&MaxResults=abc&NextToken=%ff")
	f.Fuzz(func(t *testing.T, body string) {
		r, err := ParseQuery(body)
		if err != nil {
			return
		}
		if r.Action == "" {
			t.Fatal("parsed a request without Action")
		}
		for _, v := range r.List("InstanceId") {
			_ = v
		}
		for _, fl := range r.Filters() {
			_ = wildcard(fl.Name, body)
		}
		_ = r.TagSpecifications()
		_, _, _ = r.Int("MaxResults")
		_, _, _ = paginate(r, []int{1, 2, 3}, pageLimits{min: 5, max: 100, def: 100})
	})
}
