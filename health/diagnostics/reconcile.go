package diagnostics

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/autonode/autonode/health/diagnostics/v1alpha1"
)

// ReasonInvalidDestination is the reason of a destination the agent cannot
// use (the CRD's pattern lets few through).
const ReasonInvalidDestination = "InvalidDestination"

// Reconciler captures the bundle that the NodeDiagnostic named after its
// node asks for. It is level-based: a capture runs when the object's
// generation has no finished capture yet (status.observedGeneration differs,
// or the Succeeded condition is still Unknown because an earlier agent died
// mid-capture), and a finished one is never redone until the spec changes.
type Reconciler struct {
	client    client.Client // status writes
	reader    client.Reader // uncached reads, so a stale cache never repeats a capture
	opts      Options
	collector *Collector
	uploader  *uploader
}

// NewReconciler returns a Reconciler that writes status through c and reads
// NodeDiagnostics through reader, which should not be a cache: c itself, or
// a manager's APIReader. Its Reconcile has the shape of controller-runtime's
// ObjectReconciler, so reconcile.AsReconciler can register it with a
// manager.
func NewReconciler(c client.Client, reader client.Reader, opts Options) *Reconciler {
	opts = opts.withDefaults()
	co := opts.Collector
	if co.Logger == nil {
		co.Logger = opts.Logger
	}
	if co.Now == nil {
		co.Now = opts.Now
	}
	return &Reconciler{
		client: c, reader: reader, opts: opts,
		collector: NewCollector(co),
		uploader:  &uploader{client: opts.HTTPClient, attempts: opts.UploadAttempts, backoff: opts.UploadBackoff},
	}
}

// Reconcile captures and delivers a bundle when nd asks for one that has
// not been captured. An error means the status could not be written; a
// failed capture or upload is reported in the status, not retried.
func (r *Reconciler) Reconcile(ctx context.Context, nd *v1alpha1.NodeDiagnostic) (reconcile.Result, error) {
	if nd.Name != r.opts.NodeName {
		return reconcile.Result{}, nil // another node's
	}
	fresh := &v1alpha1.NodeDiagnostic{}
	if err := r.reader.Get(ctx, client.ObjectKeyFromObject(nd), fresh); err != nil {
		if apierrors.IsNotFound(err) {
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, fmt.Errorf("getting nodediagnostic %s: %w", nd.Name, err)
	}
	if !needsCapture(fresh) {
		return reconcile.Result{}, nil
	}
	log := r.opts.Logger.With("node", r.opts.NodeName, "nodediagnostic", fresh.Name, "generation", fresh.Generation)
	lc := fresh.Spec.LogCapture
	if lc == nil {
		return reconcile.Result{}, r.finish(ctx, fresh, nil, outcome{reason: v1alpha1.ReasonNoLogCapture,
			message: "spec.logCapture is not set, so there is nothing to capture"})
	}
	dest, err := parseDestination(lc.Destination)
	if err != nil {
		return reconcile.Result{}, r.finish(ctx, fresh, nil, outcome{reason: ReasonInvalidDestination, message: err.Error()})
	}

	start := metav1.NewTime(r.opts.Now())
	if err := r.markStarted(ctx, fresh, start); err != nil {
		return reconcile.Result{}, err
	}
	log.InfoContext(ctx, "capturing support bundle", "destination", RedactURL(lc.Destination), "categories", lc.Categories)
	out := r.capture(ctx, fresh, dest, log)
	if ctx.Err() != nil {
		// Shutting down: the status stays Running, and the next agent
		// captures again.
		return reconcile.Result{}, ctx.Err()
	}
	if err := r.finish(ctx, fresh, &start, out); err != nil {
		return reconcile.Result{}, err
	}
	if out.succeeded {
		log.InfoContext(ctx, "support bundle delivered", "reason", out.reason, "location", out.location, "bytes", out.size)
	} else {
		log.WarnContext(ctx, "support bundle not delivered", "reason", out.reason, "message", out.message)
	}
	if removed, err := prune(r.opts.SupportDir, r.opts.Keep); err != nil {
		log.WarnContext(ctx, "removing old support bundles", "err", err)
	} else if len(removed) > 0 {
		log.InfoContext(ctx, "removed old support bundles", "files", removed)
	}
	return reconcile.Result{}, nil
}

// needsCapture says whether nd's generation still lacks a finished capture.
func needsCapture(nd *v1alpha1.NodeDiagnostic) bool {
	if nd.Status.ObservedGeneration != nd.Generation {
		return true
	}
	c := meta.FindStatusCondition(nd.Status.Conditions, v1alpha1.ConditionSucceeded)
	return c == nil || c.Status == metav1.ConditionUnknown || c.ObservedGeneration != nd.Generation
}

// destination is a parsed spec.logCapture.destination: a URL, or nil for
// the node.
type destination struct{ url *url.URL }

func parseDestination(s string) (destination, error) {
	if s == v1alpha1.DestinationNode {
		return destination{}, nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return destination{}, fmt.Errorf("destination %s is neither %q nor an http(s) URL", RedactURL(s), v1alpha1.DestinationNode)
	}
	return destination{url: u}, nil
}

// outcome is how a capture ended.
type outcome struct {
	succeeded bool
	reason    string
	message   string
	location  string
	nodePath  string
	size      int64
}

// capture writes the bundle into the support folder, then delivers it.
func (r *Reconciler) capture(ctx context.Context, nd *v1alpha1.NodeDiagnostic, dest destination, log *slog.Logger) outcome {
	name := bundleName(r.opts.NodeName, nd.Generation, r.opts.Now())
	path, size, err := r.writeBundle(ctx, nd, name)
	if err != nil {
		return outcome{reason: v1alpha1.ReasonCaptureFailed, message: err.Error()}
	}
	kept := outcome{location: r.nodeLocation(path), nodePath: path, size: size}
	fetch := "kept on the node at " + path
	if kept.location != "" {
		fetch += "; fetch it with: kubectl get --raw " + kept.location + " > " + filepath.Base(path)
	}
	if dest.url == nil {
		kept.succeeded, kept.reason = true, v1alpha1.ReasonStoredOnNode
		kept.message = fmt.Sprintf("bundle of %d bytes %s", size, fetch)
		return kept
	}
	target := RedactURL(dest.url.String())
	if size > r.opts.MaxUploadBytes {
		kept.reason = v1alpha1.ReasonBundleTooLarge
		kept.message = fmt.Sprintf("bundle of %d bytes exceeds the %d-byte limit of a single presigned PUT, so it was not uploaded to %s; %s",
			size, r.opts.MaxUploadBytes, target, fetch)
		return kept
	}
	if err := r.uploader.upload(ctx, dest.url.String(), path); err != nil {
		kept.reason = v1alpha1.ReasonUploadFailed
		kept.message = fmt.Sprintf("uploading the bundle to %s: %v; %s", target, err, fetch)
		return kept
	}
	if err := os.Remove(path); err != nil {
		log.WarnContext(ctx, "removing the uploaded bundle", "path", path, "err", err)
	}
	return outcome{succeeded: true, reason: v1alpha1.ReasonUploaded, location: target, size: size,
		message: fmt.Sprintf("bundle of %d bytes uploaded to %s", size, target)}
}

// writeBundle writes the bundle to a partial file and renames it into
// place once complete, so the support folder never serves half a bundle.
func (r *Reconciler) writeBundle(ctx context.Context, nd *v1alpha1.NodeDiagnostic, name string) (string, int64, error) {
	dir := r.opts.SupportDir
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", 0, fmt.Errorf("creating support folder: %w", err)
	}
	f, err := os.CreateTemp(dir, partialPrefix+"*")
	if err != nil {
		return "", 0, fmt.Errorf("creating bundle in %s: %w", dir, err)
	}
	partial := f.Name()
	defer os.Remove(partial) // a no-op once renamed
	w := bufio.NewWriterSize(f, 1<<20)
	req := Request{Name: name, Node: r.opts.NodeName, Generation: nd.Generation, Categories: nd.Spec.LogCapture.Categories}
	_, err = r.collector.Write(ctx, w, req)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", 0, fmt.Errorf("writing bundle %s: %w", name, err)
	}
	path := filepath.Join(dir, name+bundleSuffix)
	if err := os.Rename(partial, path); err != nil {
		return "", 0, fmt.Errorf("bundle %s: %w", name, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", 0, fmt.Errorf("bundle %s: %w", name, err)
	}
	return path, fi.Size(), nil
}

// nodeLocation is the apiserver path at which the kubelet's log handler
// (which serves LogRoot at /logs/) serves path, or "" when path is not
// under LogRoot.
func (r *Reconciler) nodeLocation(path string) string {
	rel, err := filepath.Rel(r.opts.LogRoot, path)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return ""
	}
	return "/api/v1/nodes/" + r.opts.NodeName + "/proxy/logs/" + filepath.ToSlash(rel)
}

// markStarted records that the capture of nd's generation has begun.
func (r *Reconciler) markStarted(ctx context.Context, nd *v1alpha1.NodeDiagnostic, start metav1.Time) error {
	base := nd.DeepCopy()
	nd.Status.ObservedGeneration = nd.Generation
	meta.SetStatusCondition(&nd.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionStarted, Status: metav1.ConditionTrue,
		Reason: v1alpha1.ReasonCapturing, Message: "the agent is capturing a support bundle", ObservedGeneration: nd.Generation})
	meta.SetStatusCondition(&nd.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionSucceeded, Status: metav1.ConditionUnknown,
		Reason: v1alpha1.ReasonCapturing, Message: "the capture is in progress", ObservedGeneration: nd.Generation})
	setCaptureStatus(nd, v1alpha1.CaptureStatus{Type: v1alpha1.CaptureTypeLogCapture, State: v1alpha1.CaptureRunning,
		Reason: v1alpha1.ReasonCapturing, Message: "capturing", StartTime: &start})
	if err := r.client.Status().Patch(ctx, nd, client.MergeFrom(base)); err != nil {
		return fmt.Errorf("patching status of nodediagnostic %s: %w", nd.Name, err)
	}
	return nil
}

// finish records how the capture of nd's generation ended.
func (r *Reconciler) finish(ctx context.Context, nd *v1alpha1.NodeDiagnostic, start *metav1.Time, out outcome) error {
	base := nd.DeepCopy()
	nd.Status.ObservedGeneration = nd.Generation
	status, state := metav1.ConditionFalse, v1alpha1.CaptureFailed
	if out.succeeded {
		status, state = metav1.ConditionTrue, v1alpha1.CaptureSucceeded
	}
	if start != nil {
		meta.SetStatusCondition(&nd.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionStarted, Status: metav1.ConditionTrue,
			Reason: v1alpha1.ReasonCapturing, Message: "the agent captured a support bundle", ObservedGeneration: nd.Generation})
	}
	meta.SetStatusCondition(&nd.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionSucceeded, Status: status,
		Reason: out.reason, Message: truncate(out.message, 32<<10), ObservedGeneration: nd.Generation})
	done := metav1.NewTime(r.opts.Now())
	setCaptureStatus(nd, v1alpha1.CaptureStatus{Type: v1alpha1.CaptureTypeLogCapture, State: state, Reason: out.reason,
		Message: truncate(out.message, 32<<10), Location: out.location, NodePath: out.nodePath, SizeBytes: out.size,
		StartTime: start, CompletionTime: &done})
	if err := r.client.Status().Patch(ctx, nd, client.MergeFrom(base)); err != nil {
		return fmt.Errorf("patching status of nodediagnostic %s: %w", nd.Name, err)
	}
	return nil
}

func setCaptureStatus(nd *v1alpha1.NodeDiagnostic, cs v1alpha1.CaptureStatus) {
	for i := range nd.Status.CaptureStatuses {
		if nd.Status.CaptureStatuses[i].Type == cs.Type {
			nd.Status.CaptureStatuses[i] = cs
			return
		}
	}
	nd.Status.CaptureStatuses = append(nd.Status.CaptureStatuses, cs)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// Options configures the diagnostics subsystem and its Reconciler. Zero
// values take the defaults.
type Options struct {
	// NodeName is this node's Node name; only the NodeDiagnostic of that
	// name is acted on. The subsystem takes it from NodeNameFunc when empty.
	NodeName string
	// NodeNameFunc gives the Node's name once the agent has found it; the
	// subsystem reads it at the start of each Run. One of the two is required.
	NodeNameFunc func() string
	// Collector says where the bundle's sources are.
	Collector CollectorOptions
	// SupportDir keeps bundles on the node. Default is /var/log/support.
	SupportDir string
	// LogRoot is the folder the kubelet's log handler serves at
	// /api/v1/nodes/<node>/proxy/logs/. Default is /var/log.
	LogRoot string
	// Keep is how many bundles stay in SupportDir; older ones are removed
	// after each capture. Default is 5.
	Keep int
	// MaxUploadBytes refuses to upload a larger bundle (it is kept on the
	// node instead). Default is 5 GiB, S3's single-PUT limit.
	MaxUploadBytes int64
	// HTTPClient uploads bundles. Default is a client with proxy settings
	// from the environment and no overall timeout (bundles can be large;
	// the capture's context bounds it).
	HTTPClient *http.Client
	// UploadAttempts is how many times a PUT that met a server error or no
	// answer is tried. Default is 3.
	UploadAttempts int
	// UploadBackoff is the wait before the first retry, doubled after each.
	// Default is 2s.
	UploadBackoff time.Duration
	// InitialBackoff and MaxBackoff shape the retries of a reconcile that
	// failed on an API error. Defaults are 1s and 2m.
	InitialBackoff, MaxBackoff time.Duration
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Now is the clock. Default is time.Now.
	Now func() time.Time
}

// The defaults of Options.
const (
	DefaultSupportDir = "/var/log/support"
	DefaultLogRoot    = "/var/log"
	DefaultKeep       = 5
)

func (o Options) withDefaults() Options {
	if o.SupportDir == "" {
		o.SupportDir = DefaultSupportDir
	}
	if o.LogRoot == "" {
		o.LogRoot = DefaultLogRoot
	}
	if o.Keep <= 0 {
		o.Keep = DefaultKeep
	}
	if o.MaxUploadBytes <= 0 {
		o.MaxUploadBytes = MaxPresignedPutBytes
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Transport: http.DefaultTransport}
	}
	if o.UploadAttempts <= 0 {
		o.UploadAttempts = 3
	}
	if o.UploadBackoff <= 0 {
		o.UploadBackoff = 2 * time.Second
	}
	if o.InitialBackoff <= 0 {
		o.InitialBackoff = time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 2 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}
