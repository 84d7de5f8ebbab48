package diagnostics

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/autonode/autonode/agent/backoff"
)

// bundlePrefix and bundleSuffix mark the files that retention manages.
const (
	bundlePrefix  = "nodediagnostic-"
	bundleSuffix  = ".tar.gz"
	partialPrefix = ".partial-" + bundlePrefix
)

// MaxPresignedPutBytes is the largest object one S3 PUT takes: 5 GiB.
const MaxPresignedPutBytes int64 = 5 << 30

// UploadError says why a bundle did not reach its URL.
type UploadError struct {
	// Status is the HTTP status, 0 when no answer came.
	Status int
	// Code is the S3 error code from the answer's body, if any.
	Code string
	Err  error
}

func (e *UploadError) Error() string {
	switch {
	case e.Status != 0 && e.Code != "":
		return fmt.Sprintf("HTTP %d %s: %v", e.Status, e.Code, e.Err)
	case e.Status != 0:
		return fmt.Sprintf("HTTP %d: %v", e.Status, e.Err)
	}
	return e.Err.Error()
}

func (e *UploadError) Unwrap() error { return e.Err }

// retryable: no answer, or a server-side error; a 4xx (expired, bad
// signature) will not get better.
func (e *UploadError) retryable() bool { return e.Status == 0 || e.Status >= 500 }

// RedactURL returns the URL without its query or credentials, so a presigned
// signature never reaches a status or a log.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}

// uploader PUTs files to presigned URLs.
type uploader struct {
	client   *http.Client
	attempts int
	backoff  time.Duration
}

// upload PUTs the file at path to rawURL with its Content-Length (a
// presigned PUT takes no chunked body), retrying server errors.
func (u *uploader) upload(ctx context.Context, rawURL, path string) error {
	delays := backoff.New(u.backoff, 8*u.backoff)
	var err error
	for attempt := 1; ; attempt++ {
		err = u.put(ctx, rawURL, path)
		var ue *UploadError
		if err == nil || !errors.As(err, &ue) || !ue.retryable() || attempt >= u.attempts {
			return err
		}
		if backoff.Sleep(ctx, delays.Step()) != nil {
			return errors.Join(err, ctx.Err())
		}
	}
}

func (u *uploader) put(ctx context.Context, rawURL, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("opening bundle %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("bundle %s: %w", path, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, rawURL, f)
	if err != nil {
		// The error would quote the URL, signature and all.
		return &UploadError{Err: errors.New("building the PUT request: invalid URL")}
	}
	req.ContentLength = fi.Size()
	// An *os.File body would otherwise be sent chunked for a zero size.
	if fi.Size() == 0 {
		req.Body = http.NoBody
	}
	req.Header.Set("Content-Type", "application/gzip")
	resp, err := u.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error quotes the presigned URL
		}
		return &UploadError{Err: err}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 == 2 {
		return nil
	}
	ue := &UploadError{Status: resp.StatusCode, Err: errors.New(http.StatusText(resp.StatusCode))}
	var doc struct {
		Code    string
		Message string
	}
	if xml.Unmarshal(body, &doc) == nil && doc.Code != "" {
		ue.Code, ue.Err = doc.Code, errors.New(doc.Message)
	}
	return ue
}

// bundleName names a bundle after the node, the generation and the time, so
// names sort by age and say what they hold.
func bundleName(node string, generation int64, now time.Time) string {
	return fmt.Sprintf("%s%s-g%d-%s", bundlePrefix, safeName(node), generation, now.UTC().Format("20060102T150405Z"))
}

// prune keeps the newest keep bundles in dir and removes the rest, along
// with partial files that an interrupted capture left.
func prune(dir string, keep int) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing support folder %s: %w", dir, err)
	}
	type bundle struct {
		name string
		mod  time.Time
	}
	var bundles []bundle
	var removed []string
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() {
			continue
		}
		if strings.HasPrefix(name, partialPrefix) {
			if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
			continue
		}
		if !strings.HasPrefix(name, bundlePrefix) || !strings.HasSuffix(name, bundleSuffix) {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		bundles = append(bundles, bundle{name, info.ModTime()})
	}
	slices.SortFunc(bundles, func(a, b bundle) int {
		if c := b.mod.Compare(a.mod); c != 0 {
			return c
		}
		return strings.Compare(b.name, a.name)
	})
	for _, b := range bundles[min(keep, len(bundles)):] {
		if err := os.Remove(filepath.Join(dir, b.name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, b.name)
	}
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("pruning support folder %s: %w", dir, err)
	}
	return removed, nil
}
