package imds

import (
	"context"
	"slices"
	"strings"
)

// node is one entry of the metadata tree: a leaf with a value, or a
// directory with children.
type node struct {
	value    string
	get      func(context.Context) (string, error) // a leaf computed when read
	json     bool
	children map[string]*node
}

func leaf(v string) *node     { return &node{value: v} }
func jsonLeaf(v string) *node { return &node{value: v, json: true} }
func dir(children map[string]*node) *node {
	return &node{children: children}
}

// lookup walks a slash-separated path. A trailing slash or none both reach a
// directory, as on the real service.
func (n *node) lookup(path string) *node {
	for _, part := range strings.Split(strings.Trim(path, "/"), "/") {
		if part == "" {
			continue
		}
		if n.children == nil {
			return nil
		}
		child, ok := n.children[part]
		if !ok {
			return nil
		}
		n = child
	}
	return n
}

// text is a leaf's value, or a directory listing: one name a line, sorted,
// with directories marked by a trailing slash.
func (n *node) text(ctx context.Context) (string, error) {
	if n.get != nil {
		return n.get(ctx)
	}
	if n.children == nil {
		return n.value, nil
	}
	names := make([]string, 0, len(n.children))
	for name, c := range n.children {
		if c.children != nil { // an empty directory still lists with its slash
			name += "/"
		}
		names = append(names, name)
	}
	slices.Sort(names)
	return strings.Join(names, "\n"), nil
}
