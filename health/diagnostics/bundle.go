package diagnostics

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/autonode/autonode/health/diagnostics/v1alpha1"
)

// StateFunc dumps some state into the bundle; its output becomes one file.
type StateFunc func(ctx context.Context) ([]byte, error)

// The defaults of CollectorOptions.
const (
	DefaultKmsgPath       = "/dev/kmsg"
	DefaultProcRoot       = "/proc"
	DefaultJournalSince   = 24 * time.Hour
	DefaultMaxSourceBytes = 128 << 20
)

// defaultJournalDirs are where journald keeps persistent and volatile
// journals; when neither exists, journald is taken to be absent.
var defaultJournalDirs = []string{"/var/log/journal", "/run/log/journal"}

// CollectorOptions configures what a Collector reads. Zero values take the
// defaults.
type CollectorOptions struct {
	// JournalDir is a folder of journal files to read. Default is the
	// system journal, when /var/log/journal or /run/log/journal exists.
	JournalDir string
	// JournalSince is how far back journal entries are read. Default is 24h.
	JournalSince time.Duration
	// KmsgPath is the kernel log device (or, in tests, a file of records
	// one a line). Default is /dev/kmsg.
	KmsgPath string
	// ProcRoot is where procfs is mounted; the mount table comes from
	// <ProcRoot>/self/mountinfo. Default is /proc.
	ProcRoot string
	// Netlink is a handle on the netns whose network configuration is
	// dumped. Default is a handle on the agent's own netns.
	Netlink *netlink.Handle
	// State are the agent's own state dumps, by file name (such as
	// "ipam.json"); each lands in state/<name> in every bundle, whatever the
	// categories, since the agent's state is small and always relevant.
	State map[string]StateFunc
	// Containerd, when set, dumps the runtime's information (version,
	// plugins, containers) into runtime/containerd.txt. Nil leaves it out.
	Containerd StateFunc
	// MaxSourceBytes caps each file in the bundle; what is over is dropped
	// with a note. Default is 128 MiB.
	MaxSourceBytes int64
	// Logger receives sources that failed. Default discards.
	Logger *slog.Logger
	// Now is the clock. Default is time.Now.
	Now func() time.Time
}

// Collector writes support bundles.
type Collector struct {
	opts CollectorOptions
}

// NewCollector returns a Collector; nothing is read until Write.
func NewCollector(opts CollectorOptions) *Collector {
	if opts.JournalSince <= 0 {
		opts.JournalSince = DefaultJournalSince
	}
	if opts.KmsgPath == "" {
		opts.KmsgPath = DefaultKmsgPath
	}
	if opts.ProcRoot == "" {
		opts.ProcRoot = DefaultProcRoot
	}
	if opts.MaxSourceBytes <= 0 {
		opts.MaxSourceBytes = DefaultMaxSourceBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Collector{opts: opts}
}

// Request says what one bundle holds.
type Request struct {
	// Name is the bundle's base name; its files sit under <Name>/ in the tar.
	Name       string
	Node       string
	Generation int64
	// Categories select the sources; empty means All.
	Categories []v1alpha1.Category
}

// Manifest describes a bundle; it is the bundle's manifest.json.
type Manifest struct {
	Node       string              `json:"node"`
	Generation int64               `json:"generation"`
	Categories []v1alpha1.Category `json:"categories"`
	Created    time.Time           `json:"created"`
	// Files are the paths in the bundle, relative to its folder.
	Files []string `json:"files"`
	// Errors are the sources that failed, by file; a failed source does not
	// fail the bundle.
	Errors map[string]string `json:"errors,omitempty"`
}

// journalUnits are the systemd units whose journal goes into a bundle, with
// the categories that select each. The agent's own log bears on every
// category.
var journalUnits = []struct {
	unit       string
	categories []v1alpha1.Category
}{
	{"kubelet.service", []v1alpha1.Category{v1alpha1.CategorySystem, v1alpha1.CategoryRuntime}},
	{"containerd.service", []v1alpha1.Category{v1alpha1.CategorySystem, v1alpha1.CategoryRuntime}},
	{"autonode-agent.service", []v1alpha1.Category{v1alpha1.CategorySystem, v1alpha1.CategoryNetworking,
		v1alpha1.CategoryRuntime, v1alpha1.CategoryDevices, v1alpha1.CategoryStorage}},
}

// JournalAbsentFile is the note a bundle carries instead of journal logs
// when journald is not there to read.
const JournalAbsentFile = "journal/JOURNAL-ABSENT.txt"

// source is one file of the bundle.
type source struct {
	name string
	read func(ctx context.Context) ([]byte, error)
}

// Write collects the sources that req selects and writes them to w as a
// tar.gz, each under <req.Name>/, with manifest.json last. A source that
// fails is recorded in the manifest (and in <name>.error); only failing to
// write w is an error.
func (c *Collector) Write(ctx context.Context, w io.Writer, req Request) (*Manifest, error) {
	cats := req.Categories
	if len(cats) == 0 || slices.Contains(cats, v1alpha1.CategoryAll) {
		cats = []v1alpha1.Category{v1alpha1.CategoryAll}
	}
	m := &Manifest{Node: req.Node, Generation: req.Generation, Categories: cats, Created: c.opts.Now().UTC(), Errors: map[string]string{}}
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	write := func(name string, data []byte) error {
		hdr := &tar.Header{Name: path.Join(req.Name, name), Mode: 0o600, Size: int64(len(data)), ModTime: m.Created, Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("bundle %s: %s: %w", req.Name, name, err)
		}
		if _, err := tw.Write(data); err != nil {
			return fmt.Errorf("bundle %s: %s: %w", req.Name, name, err)
		}
		return nil
	}
	add := func(name string, data []byte) error {
		if err := write(name, data); err != nil {
			return err
		}
		m.Files = append(m.Files, name)
		return nil
	}
	for _, src := range c.sources(cats) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		data, err := src.read(ctx)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err != nil {
			c.opts.Logger.WarnContext(ctx, "diagnostics source failed", "node", req.Node, "source", src.name, "err", err)
			m.Errors[src.name] = err.Error()
			if err := add(src.name+".error", []byte(err.Error()+"\n")); err != nil {
				return nil, err
			}
			if len(data) == 0 {
				continue
			}
		}
		if int64(len(data)) > c.opts.MaxSourceBytes {
			data = append(data[:c.opts.MaxSourceBytes:c.opts.MaxSourceBytes], "\n[truncated at the bundle's per-source limit]\n"...)
		}
		if err := add(src.name, data); err != nil {
			return nil, err
		}
	}
	// The manifest lists itself, so it is recorded before it is encoded.
	m.Files = append(m.Files, "manifest.json")
	mj, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("bundle %s: manifest: %w", req.Name, err)
	}
	if err := write("manifest.json", mj); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("bundle %s: %w", req.Name, err)
	}
	if err := gz.Close(); err != nil {
		return nil, fmt.Errorf("bundle %s: %w", req.Name, err)
	}
	return m, nil
}

// sources lists the files that the categories select, in bundle order.
func (c *Collector) sources(cats []v1alpha1.Category) []source {
	want := func(of ...v1alpha1.Category) bool {
		return slices.Contains(cats, v1alpha1.CategoryAll) || slices.ContainsFunc(of, func(x v1alpha1.Category) bool { return slices.Contains(cats, x) })
	}
	var srcs []source
	journalDir, absent := c.journalDir()
	for _, u := range journalUnits {
		if !want(u.categories...) {
			continue
		}
		if absent != nil {
			srcs = append(srcs, source{JournalAbsentFile, func(context.Context) ([]byte, error) {
				return []byte("journald was not available on this node, so no unit logs were captured: " + absent.Error() + "\n"), nil
			}})
			break
		}
		since := c.opts.Now().Add(-c.opts.JournalSince)
		srcs = append(srcs, source{"journal/" + strings.TrimSuffix(u.unit, ".service") + ".log", func(ctx context.Context) ([]byte, error) {
			return readJournalUnit(ctx, journalDir, u.unit, since, c.opts.MaxSourceBytes)
		}})
	}
	if want(v1alpha1.CategorySystem, v1alpha1.CategoryDevices, v1alpha1.CategoryStorage) {
		srcs = append(srcs, source{"kernel/kmsg.log", func(ctx context.Context) ([]byte, error) {
			return snapshotKmsg(ctx, c.opts.KmsgPath, c.opts.MaxSourceBytes)
		}})
	}
	if want(v1alpha1.CategoryNetworking) {
		var dump *NetworkDump
		var dumpErr error
		load := func() (*NetworkDump, error) {
			if dump == nil && dumpErr == nil {
				dump, dumpErr = c.dumpNetwork()
			}
			return dump, dumpErr
		}
		srcs = append(srcs,
			source{"network/netlink.json", func(context.Context) ([]byte, error) {
				d, err := load()
				if err != nil {
					return nil, err
				}
				return d.JSON()
			}},
			source{"network/routes.txt", func(context.Context) ([]byte, error) {
				d, err := load()
				if err != nil {
					return nil, err
				}
				return d.RoutesText(), nil
			}})
	}
	if want(v1alpha1.CategoryStorage) {
		srcs = append(srcs, source{"storage/mountinfo", func(context.Context) ([]byte, error) {
			p := filepath.Join(c.opts.ProcRoot, "self", "mountinfo")
			data, err := os.ReadFile(p)
			if err != nil {
				return nil, fmt.Errorf("reading mount table: %w", err)
			}
			return data, nil
		}})
	}
	if want(v1alpha1.CategoryRuntime) && c.opts.Containerd != nil {
		srcs = append(srcs, source{"runtime/containerd.txt", c.opts.Containerd})
	}
	names := make([]string, 0, len(c.opts.State))
	for name := range c.opts.State {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		srcs = append(srcs, source{"state/" + safeName(name), c.opts.State[name]})
	}
	return srcs
}

// journalDir returns the journal folder to read ("" for the system journal)
// or why journald is absent.
func (c *Collector) journalDir() (string, error) {
	if c.opts.JournalDir != "" {
		if _, err := os.Stat(c.opts.JournalDir); err != nil {
			return "", fmt.Errorf("journal folder: %w", err)
		}
		return c.opts.JournalDir, nil
	}
	var errs []error
	for _, d := range defaultJournalDirs {
		_, err := os.Stat(d)
		if err == nil {
			return "", nil
		}
		errs = append(errs, err)
	}
	return "", fmt.Errorf("no journal folder: %w", errors.Join(errs...))
}

func (c *Collector) dumpNetwork() (*NetworkDump, error) {
	h := c.opts.Netlink
	if h == nil {
		var err error
		if h, err = netlink.NewHandle(); err != nil {
			return nil, fmt.Errorf("netlink handle: %w", err)
		}
		defer h.Close()
	}
	return dumpNetwork(h)
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]`)

// safeName makes a provider's name one path component.
func safeName(name string) string {
	name = unsafeChars.ReplaceAllString(name, "_")
	if name == "" || name == "." || name == ".." {
		name = "_" + name
	}
	return name
}
