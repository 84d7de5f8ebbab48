package ec2

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// maxListIndex bounds the N in Name.N: EC2 itself caps lists far below this,
// and the bound keeps a hostile body from naming huge indices.
const maxListIndex = 10000

// Request is one parsed EC2 Query API call.
type Request struct {
	Action  string
	Version string
	Params  url.Values
}

// Filter is one Filter.N: a name and the values any of which may match.
type Filter struct {
	Name   string
	Values []string
}

// Tag is one key/value pair.
type Tag struct {
	Key   string
	Value string
}

// TagSpecification is one TagSpecification.N: tags for one resource type.
type TagSpecification struct {
	ResourceType string
	Tags         []Tag
}

// ParseQuery parses a form-encoded EC2 Query body. Action is required.
func ParseQuery(body string) (*Request, error) {
	values, err := url.ParseQuery(body)
	if err != nil {
		return nil, fmt.Errorf("parsing query body: %w", err)
	}
	r := &Request{Action: values.Get("Action"), Version: values.Get("Version"), Params: values}
	if r.Action == "" {
		return nil, fmt.Errorf("parsing query body: no Action")
	}
	return r, nil
}

// Get returns one parameter, or "".
func (r *Request) Get(name string) string { return r.Params.Get(name) }

// Int returns an integer parameter; ok is false when it is absent.
func (r *Request) Int(name string) (n int, ok bool, err error) {
	s := r.Params.Get(name)
	if s == "" {
		return 0, false, nil
	}
	n, err = strconv.Atoi(s)
	if err != nil {
		return 0, true, Errorf(CodeInvalidParameterValue, "Invalid value %q for %s", s, name)
	}
	return n, true, nil
}

// Bool returns a boolean parameter; ok is false when it is absent. EC2
// takes true and false in any case, nothing else.
func (r *Request) Bool(name string) (v, ok bool, err error) {
	s := r.Params.Get(name)
	switch {
	case s == "":
		return false, false, nil
	case strings.EqualFold(s, "true"):
		return true, true, nil
	case strings.EqualFold(s, "false"):
		return false, true, nil
	}
	return false, true, Errorf(CodeInvalidParameterValue, "Invalid value %q for %s, expecting true or false", s, name)
}

// indices returns the N of every "<prefix>.N" or "<prefix>.N.<rest>" key,
// sorted; EC2 orders list members by N, which need not be dense.
func (r *Request) indices(prefix string) []int {
	seen := map[int]bool{}
	for key := range r.Params {
		rest, ok := strings.CutPrefix(key, prefix+".")
		if !ok {
			continue
		}
		num, _, _ := strings.Cut(rest, ".")
		n, err := strconv.Atoi(num)
		if err != nil || n < 1 || n > maxListIndex || strconv.Itoa(n) != num {
			continue
		}
		seen[n] = true
	}
	out := make([]int, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// List returns the members of a flat list such as InstanceId.N, in N order.
func (r *Request) List(name string) []string {
	var out []string
	for _, n := range r.indices(name) {
		if v, ok := r.Params[name+"."+strconv.Itoa(n)]; ok {
			out = append(out, v[0])
		}
	}
	return out
}

// Filters returns Filter.N.Name with its Filter.N.Value.M.
func (r *Request) Filters() []Filter {
	var out []Filter
	for _, n := range r.indices("Filter") {
		p := "Filter." + strconv.Itoa(n)
		out = append(out, Filter{Name: r.Params.Get(p + ".Name"), Values: r.List(p + ".Value")})
	}
	return out
}

// TagSpecifications returns TagSpecification.N.ResourceType with its
// TagSpecification.N.Tag.M.Key/Value.
func (r *Request) TagSpecifications() []TagSpecification {
	var out []TagSpecification
	for _, n := range r.indices("TagSpecification") {
		p := "TagSpecification." + strconv.Itoa(n)
		spec := TagSpecification{ResourceType: r.Params.Get(p + ".ResourceType")}
		for _, m := range r.indices(p + ".Tag") {
			t := p + ".Tag." + strconv.Itoa(m)
			spec.Tags = append(spec.Tags, Tag{Key: r.Params.Get(t + ".Key"), Value: r.Params.Get(t + ".Value")})
		}
		out = append(out, spec)
	}
	return out
}
