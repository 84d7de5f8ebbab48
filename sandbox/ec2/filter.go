package ec2

import (
	"encoding/base64"
	"strconv"
	"strings"
)

// fieldFuncs maps a filter name to the values an item has for it.
type fieldFuncs[T any] map[string]func(T) []string

// applyFilters keeps the items that match every filter; a filter matches when
// any of its values matches any of the item's values, with EC2's * and ?
// wildcards. tag:<key> filters read tags. Unknown filter names are rejected,
// as EC2 does.
func applyFilters[T any](items []T, filters []Filter, fields fieldFuncs[T], tags func(T) map[string]string) ([]T, error) {
	for _, f := range filters {
		_, known := fields[f.Name]
		isTag := tags != nil && strings.HasPrefix(f.Name, "tag:")
		if !known && !isTag && !(tags != nil && f.Name == "tag-key") {
			return nil, Errorf(CodeInvalidParameterValue, "The filter '%s' is invalid", f.Name)
		}
	}
	out := items[:0:0]
	for _, it := range items {
		if matchesAll(it, filters, fields, tags) {
			out = append(out, it)
		}
	}
	return out, nil
}

func matchesAll[T any](it T, filters []Filter, fields fieldFuncs[T], tags func(T) map[string]string) bool {
	for _, f := range filters {
		var have []string
		switch {
		case fields[f.Name] != nil:
			have = fields[f.Name](it)
		case f.Name == "tag-key":
			for k := range tags(it) {
				have = append(have, k)
			}
		default: // tag:<key>
			if v, ok := tags(it)[strings.TrimPrefix(f.Name, "tag:")]; ok {
				have = []string{v}
			}
		}
		if !anyMatch(f.Values, have) {
			return false
		}
	}
	return true
}

func anyMatch(patterns, have []string) bool {
	for _, p := range patterns {
		for _, h := range have {
			if wildcard(p, h) {
				return true
			}
		}
	}
	return false
}

// wildcard matches s against p, where * is any run and ? any one character.
// It is iterative with one backtrack point, so it runs in O(len(p)*len(s)).
func wildcard(p, s string) bool {
	pi, si, star, mark := 0, 0, -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == s[si]):
			pi++
			si++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// pageLimits are an action's MaxResults bounds; def 0 means "everything" when
// the caller does not page.
type pageLimits struct{ min, max, def int }

// paginate returns the page the request asks for and the token of the next.
// The token is the offset of the next item, base64-encoded so that clients
// treat it as opaque.
func paginate[T any](r *Request, items []T, lim pageLimits) ([]T, string, error) {
	size, set, err := r.Int("MaxResults")
	if err != nil {
		return nil, "", err
	}
	if set && (size < lim.min || size > lim.max) {
		return nil, "", Errorf(CodeInvalidParameterValue, "Value ( %d ) for parameter maxResults is invalid. Expecting a value between %d and %d.", size, lim.min, lim.max)
	}
	if !set {
		size = lim.def
	}
	start := 0
	if tok := r.Get("NextToken"); tok != "" {
		raw, err := base64.RawURLEncoding.DecodeString(tok)
		n, convErr := strconv.Atoi(strings.TrimPrefix(string(raw), "o"))
		if err != nil || convErr != nil || !strings.HasPrefix(string(raw), "o") || n < 0 || n > len(items) {
			return nil, "", Errorf(CodeInvalidPaginationToken, "Invalid pagination token")
		}
		start = n
	}
	end := len(items)
	if size > 0 && start+size < end {
		end = start + size
	}
	next := ""
	if end < len(items) {
		next = base64.RawURLEncoding.EncodeToString([]byte("o" + strconv.Itoa(end)))
	}
	return items[start:end], next, nil
}

// requireKnown fails with code when any of ids is not in known.
func requireKnown(ids []string, known func(string) bool, code, what string) error {
	var missing []string
	for _, id := range ids {
		if !known(id) {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return Errorf(code, "The %s '%s' does not exist", what, strings.Join(missing, ", "))
	}
	return nil
}
