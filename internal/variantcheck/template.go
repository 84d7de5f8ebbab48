package variantcheck

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/mailgun/raymond/v2"
	"github.com/mailgun/raymond/v2/ast"
	"github.com/mailgun/raymond/v2/parser"
	"github.com/pelletier/go-toml/v2"
)

// A Bottlerocket configuration template (schnauzer v2, as in core-kit) is
// TOML front matter naming the settings extensions and helpers it needs,
// a line "+++", then a Handlebars body that the settings system renders in
// strict mode with handlebars-rust.
const frontMatterEnd = "+++"

// builtinHelpers are handlebars-rust's own helpers, available to every
// template without a declaration.
var builtinHelpers = []string{
	"if", "unless", "each", "with", "lookup", "log", "raw",
	"eq", "ne", "gt", "gte", "lt", "lte", "and", "or", "not", "len",
}

// Template is a parsed Bottlerocket template.
type Template struct {
	// Extensions maps each required settings extension to its version.
	Extensions map[string]string
	// Helpers lists the helpers the front matter declares, by extension.
	Helpers map[string][]string
	body    string
	program *ast.Program
}

// ParseTemplate splits src into front matter and body and parses both; a
// body that is not valid Handlebars, or front matter that is not valid TOML
// in schnauzer's shape, is an error.
func ParseTemplate(src string) (*Template, error) {
	front, body, ok := cutFrontMatter(src)
	if !ok {
		return nil, errors.New("no front matter: a template starts with [required-extensions] and a line +++")
	}
	var fm struct {
		RequiredExtensions map[string]any `toml:"required-extensions"`
	}
	dec := toml.NewDecoder(strings.NewReader(front))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fm); err != nil {
		return nil, fmt.Errorf("front matter: %w", err)
	}
	t := &Template{Extensions: map[string]string{}, Helpers: map[string][]string{}, body: body}
	for ext, v := range fm.RequiredExtensions {
		switch v := v.(type) {
		case string:
			t.Extensions[ext] = v
		case map[string]any:
			version, _ := v["version"].(string)
			if version == "" {
				return nil, fmt.Errorf("front matter: extension %q: version is required", ext)
			}
			t.Extensions[ext] = version
			for k := range v {
				if k != "version" && k != "helpers" {
					return nil, fmt.Errorf("front matter: extension %q: unknown key %q", ext, k)
				}
			}
			if hs, ok := v["helpers"]; ok {
				if err := isStringList(hs); err != nil {
					return nil, fmt.Errorf("front matter: extension %q: helpers: %w", ext, err)
				}
				for _, h := range hs.([]any) {
					t.Helpers[ext] = append(t.Helpers[ext], h.(string))
				}
			}
		default:
			return nil, fmt.Errorf("front matter: extension %q: want a version string or a table, got %T", ext, v)
		}
	}
	prog, err := parser.Parse(body)
	if err != nil {
		return nil, fmt.Errorf("template body: %w", err)
	}
	t.program = prog
	return t, nil
}

func cutFrontMatter(src string) (front, body string, ok bool) {
	lines := strings.SplitAfter(src, "\n")
	for i, l := range lines {
		if strings.TrimRight(l, "\r\n") == frontMatterEnd {
			return strings.Join(lines[:i], ""), strings.Join(lines[i+1:], ""), true
		}
	}
	return "", "", false
}

// HelperFunc is a stand-in for one Bottlerocket template helper, with the
// signature raymond calls.
type HelperFunc any

// Render renders the template with data (typically {"settings": {...}}),
// as the settings system would in strict mode:
//
//   - every helper used must be a handlebars-rust builtin or declared in
//     the front matter, and declared helpers must have a stand-in in stubs
//     (keyed "extension.helper");
//   - a bare {{path}} outside any #each/#with must resolve in data: a
//     missing setting is an error, as in strict mode. Helper parameters and
//     block conditions may be missing, as #if and std's default rely on;
//   - #each iterates maps in key order and takes its {{else}} branch for a
//     value that is neither a list nor a map, like handlebars-rust.
func (t *Template) Render(data map[string]any, stubs map[string]HelperFunc) (string, error) {
	allowed := slices.Clone(builtinHelpers)
	helpers := map[string]HelperFunc{}
	for ext, hs := range t.Helpers {
		if _, ok := t.Extensions[ext]; !ok {
			return "", fmt.Errorf("helpers of extension %q, which is not required", ext)
		}
		for _, h := range hs {
			stub, ok := stubs[ext+"."+h]
			if !ok {
				return "", fmt.Errorf("helper %s.%s has no stand-in in the check", ext, h)
			}
			helpers[h] = stub
			allowed = append(allowed, h)
		}
	}
	w := strictWalker{data: data, allowed: allowed}
	w.program(t.program, true)
	if err := errors.Join(w.errs...); err != nil {
		return "", err
	}
	tpl, err := raymond.Parse(t.body)
	if err != nil {
		return "", fmt.Errorf("template body: %w", err)
	}
	tpl.RegisterHelpers(map[string]any{
		"each": eachHelper,
		"eq":   func(a, b any) any { return reflect.DeepEqual(normalize(a), normalize(b)) },
		"ne":   func(a, b any) any { return !reflect.DeepEqual(normalize(a), normalize(b)) },
		"and":  func(a, b any) any { return raymond.IsTrue(a) && raymond.IsTrue(b) },
		"or":   func(a, b any) any { return raymond.IsTrue(a) || raymond.IsTrue(b) },
		"not":  func(a any) any { return !raymond.IsTrue(a) },
	})
	for name, h := range helpers {
		tpl.RegisterHelper(name, h)
	}
	out, err := tpl.Exec(data)
	if err != nil {
		return "", fmt.Errorf("rendering: %w", err)
	}
	return out, nil
}

// normalize makes numbers from TOML (int64), JSON (float64) and template
// literals compare equal, as they do in serde_json.
func normalize(v any) any {
	switch n := v.(type) {
	case int:
		return float64(n)
	case int64:
		return float64(n)
	}
	return v
}

// eachHelper is handlebars-rust's #each: lists in order, maps in key order
// with @key, and the inverse branch for an empty or non-iterable value.
func eachHelper(ctx any, options *raymond.Options) any {
	val := reflect.ValueOf(ctx)
	var out strings.Builder
	switch {
	case ctx == nil:
		return options.Inverse()
	case val.Kind() == reflect.Slice || val.Kind() == reflect.Array:
		if val.Len() == 0 {
			return options.Inverse()
		}
		for i := 0; i < val.Len(); i++ {
			frame := options.NewDataFrame()
			frame.Set("index", i)
			frame.Set("first", i == 0)
			frame.Set("last", i == val.Len()-1)
			out.WriteString(options.FnCtxData(val.Index(i).Interface(), frame))
		}
	case val.Kind() == reflect.Map:
		if val.Len() == 0 {
			return options.Inverse()
		}
		keys := make([]string, 0, val.Len())
		for _, k := range val.MapKeys() {
			keys = append(keys, fmt.Sprint(k.Interface()))
		}
		sort.Strings(keys)
		for i, k := range keys {
			frame := options.NewDataFrame()
			frame.Set("key", k)
			frame.Set("index", i)
			frame.Set("first", i == 0)
			frame.Set("last", i == len(keys)-1)
			out.WriteString(options.FnCtxData(val.MapIndex(reflect.ValueOf(k)).Interface(), frame))
		}
	default:
		return options.Inverse()
	}
	return raymond.SafeString(out.String())
}

// strictWalker finds what handlebars-rust's strict mode and schnauzer's
// helper declarations reject before raymond, which has neither, renders.
type strictWalker struct {
	data    map[string]any
	allowed []string
	errs    []error
}

func (w *strictWalker) program(p *ast.Program, root bool) {
	if p == nil {
		return
	}
	for _, n := range p.Body {
		switch n := n.(type) {
		case *ast.MustacheStatement:
			w.mustache(n, root)
		case *ast.BlockStatement:
			name := n.Expression.HelperName()
			w.helperUse(name, n.Expression, n.Loc.Line)
			w.params(n.Expression)
			// Only the branch that renders can fail: with a plain setting
			// as the condition of #if/#unless, follow the one the data
			// picks; otherwise check both.
			body, inverse := true, true
			if truthy, known := w.condition(n.Expression, root); known {
				if name == "unless" {
					truthy = !truthy
				}
				body, inverse = truthy, !truthy
			}
			// #each and #with evaluate their body against the item.
			inner := root && name != "each" && name != "with"
			if body {
				w.program(n.Program, inner)
			}
			if inverse {
				w.program(n.Inverse, root)
			}
		case *ast.PartialStatement:
			w.errs = append(w.errs, fmt.Errorf("line %d: partials are not available to Bottlerocket templates", n.Loc.Line))
		}
	}
}

func (w *strictWalker) mustache(n *ast.MustacheStatement, root bool) {
	e := n.Expression
	path, _ := e.Path.(*ast.PathExpression)
	if len(e.Params) > 0 || e.Hash != nil || (path != nil && w.isHelper(path.Original)) {
		w.helperUse(e.HelperName(), e, n.Loc.Line)
		w.params(e)
		return
	}
	if path == nil || path.Data || path.Depth > 0 {
		return
	}
	if len(path.Parts) == 0 || path.Parts[0] == "this" {
		return
	}
	if !root {
		if path.Parts[0] == "settings" {
			w.errs = append(w.errs, fmt.Errorf("line %d: {{%s}} inside #each/#with resolves against the item, not the settings; use ../ or move it out", n.Loc.Line, path.Original))
		}
		return
	}
	if !resolves(w.data, path.Parts) {
		w.errs = append(w.errs, fmt.Errorf("line %d: {{%s}}: missing setting (strict mode fails the render)", n.Loc.Line, path.Original))
	}
}

func (w *strictWalker) isHelper(name string) bool { return slices.Contains(w.allowed, name) }

func (w *strictWalker) helperUse(name string, e *ast.Expression, line int) {
	if name == "" || w.isHelper(name) {
		return
	}
	w.errs = append(w.errs, fmt.Errorf("line %d: helper %q is neither a handlebars builtin nor declared in [required-extensions] (%s)", line, name, e.String()))
}

// params checks the helpers that subexpressions call.
func (w *strictWalker) params(e *ast.Expression) {
	nodes := slices.Clone(e.Params)
	if e.Hash != nil {
		for _, p := range e.Hash.Pairs {
			nodes = append(nodes, p.Val)
		}
	}
	for _, p := range nodes {
		if sub, ok := p.(*ast.SubExpression); ok {
			w.helperUse(sub.Expression.HelperName(), sub.Expression, sub.Loc.Line)
			w.params(sub.Expression)
		}
	}
}

// condition reports whether an #if or #unless on a plain path is true for
// the data, with handlebars-rust's truthiness; known is false for any
// other block or condition.
func (w *strictWalker) condition(e *ast.Expression, root bool) (truthy, known bool) {
	name := e.HelperName()
	if !root || (name != "if" && name != "unless") || len(e.Params) != 1 || e.Hash != nil {
		return false, false
	}
	path, ok := e.Params[0].(*ast.PathExpression)
	if !ok || path.Data || path.Depth > 0 || len(path.Parts) == 0 || path.Parts[0] == "this" {
		return false, false
	}
	v, _ := lookup(w.data, path.Parts)
	switch v := v.(type) {
	case nil:
		return false, true
	case bool:
		return v, true
	case string:
		return v != "", true
	case int64:
		return v != 0, true
	case float64:
		return v != 0, true
	case []any:
		return len(v) > 0, true
	case map[string]any:
		return len(v) > 0, true
	}
	return true, true
}

func lookup(data map[string]any, parts []string) (any, bool) {
	var cur any = data
	for _, p := range parts {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[p]; !ok {
			return nil, false
		}
	}
	return cur, cur != nil
}

func resolves(data map[string]any, parts []string) bool {
	_, ok := lookup(data, parts)
	return ok
}

// StdDefault stands in for schnauzer's std v1 "default" helper:
// {{default FALLBACK VALUE}} renders VALUE, or FALLBACK when VALUE is
// missing or null.
func StdDefault(fallback, value any) any {
	if value == nil {
		return fallback
	}
	return value
}

// Stubs are the stand-ins for the Bottlerocket helpers autonode's templates
// declare. A template that declares a helper not listed here fails to
// render until a stand-in with the helper's documented behavior is added.
func Stubs() map[string]HelperFunc {
	return map[string]HelperFunc{"std.default": StdDefault}
}

// RenderFile parses and renders one template file's contents.
func RenderFile(name string, src []byte, data map[string]any) (string, error) {
	t, err := ParseTemplate(string(src))
	if err != nil {
		return "", fmt.Errorf("template %s: %w", name, err)
	}
	out, err := t.Render(data, Stubs())
	if err != nil {
		return "", fmt.Errorf("template %s: %w", name, err)
	}
	return out, nil
}
