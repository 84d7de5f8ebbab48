package instance

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"

	sandboximds "github.com/autonode/autonode/sandbox/imds"
	"github.com/autonode/autonode/sandbox/vpc"
)

// emulated serves the sandbox IMDS for one instance through wrap.
func emulated(t *testing.T, wrap func(http.Handler) http.Handler) (vpc.Instance, *imds.Client) {
	t.Helper()
	model, err := vpc.New(vpc.Config{})
	if err != nil {
		t.Fatal(err)
	}
	inst, err := model.LaunchInstance("c5.large", model.Subnets()[1].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(wrap(sandboximds.New(model, inst.ID, sandboximds.Options{})))
	t.Cleanup(srv.Close)
	// One SDK attempt per call, so that the retries seen are Fetch's own.
	client := imds.New(imds.Options{Endpoint: srv.URL, Retryer: aws.NopRetryer{}})
	return inst, client
}

func fastOptions(log *bytes.Buffer) Options {
	return Options{
		Logger:         slog.New(slog.NewTextHandler(log, nil)),
		Timeout:        5 * time.Second,
		InitialBackoff: time.Millisecond,
		MaxBackoff:     5 * time.Millisecond,
	}
}

func TestFetchFromEmulator(t *testing.T) {
	inst, client := emulated(t, func(h http.Handler) http.Handler { return h })
	var log bytes.Buffer
	id, err := Fetch(context.Background(), client, fastOptions(&log))
	if err != nil {
		t.Fatal(err)
	}
	if id.InstanceID != inst.ID || id.InstanceType != "c5.large" || id.AvailabilityZone != inst.Zone.Name ||
		id.PrivateIPv4 != inst.PrivateIP || id.Hostname != inst.PrivateDNSName || len(id.MACs) != 1 || id.MACs[0] != id.MAC ||
		len(id.VPCCIDRs) != 1 || id.VPCCIDRs[0].String() != "10.0.0.0/16" {
		t.Errorf("Fetch() = %+v, instance %+v", id, inst)
	}
	if !strings.Contains(log.String(), "attempts=1") {
		t.Errorf("log: %s", log.String())
	}
}

func TestFetchRetriesOutagesAndBadAnswers(t *testing.T) {
	tests := []struct {
		name string
		fail func(w http.ResponseWriter, r *http.Request) bool
		want string // in the retry log line
	}{
		{"service down", func(w http.ResponseWriter, _ *http.Request) bool {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return true
		}, "503"},
		{"garbage instance id", func(w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path != "/latest/meta-data/instance-id" {
				return false
			}
			w.Write([]byte("<html>captive portal</html>"))
			return true
		}, "metadata instance-id"},
		{"slow", func(w http.ResponseWriter, r *http.Request) bool {
			select {
			case <-r.Context().Done():
			case <-time.After(2 * time.Second):
			}
			return true
		}, "deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var failures atomic.Int32
			_, client := emulated(t, func(h http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.Method == http.MethodGet && failures.Load() < 3 && tt.fail(w, r) {
						failures.Add(1)
						return
					}
					h.ServeHTTP(w, r)
				})
			})
			var log bytes.Buffer
			opts := fastOptions(&log)
			opts.Timeout = 200 * time.Millisecond
			id, err := Fetch(context.Background(), client, opts)
			if err != nil {
				t.Fatalf("Fetch() = %v", err)
			}
			if id.InstanceID == "" {
				t.Fatal("empty identity")
			}
			// At least: on a loaded machine a healthy request may time out too.
			if got := strings.Count(log.String(), "retrying"); got < 3 {
				t.Errorf("%d retry log lines, want at least 3:\n%s", got, log.String())
			}
			if !strings.Contains(log.String(), tt.want) {
				t.Errorf("retry log lines do not say %q:\n%s", tt.want, log.String())
			}
		})
	}
}

func TestFetchGivesUpWhenContextEnds(t *testing.T) {
	_, client := emulated(t, func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "down", http.StatusInternalServerError)
		})
	})
	// The context ends as the first retry is announced, so the failure it
	// reports is the 500, not an interrupted request.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := fastOptions(&bytes.Buffer{})
	opts.Logger = slog.New(cancelOnWarn{opts.Logger.Handler(), cancel})
	_, err := Fetch(ctx, client, opts)
	if err == nil || !strings.Contains(err.Error(), "context canceled") || !strings.Contains(err.Error(), "500") {
		t.Fatalf("Fetch() = %v, want the context error joined with the last failure", err)
	}
}

func TestFetchNeverFallsBackToIMDSv1(t *testing.T) {
	model, err := vpc.New(vpc.Config{})
	if err != nil {
		t.Fatal(err)
	}
	launched, err := model.LaunchInstance("m5.large", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	emulator := sandboximds.New(model, launched.ID, sandboximds.Options{})
	// A service that refuses tokens but would answer token-less GETs.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		r.Header.Set("X-aws-ec2-metadata-token", tokenFor(t, emulator))
		emulator.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	client := NewClient(srv.URL)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := fastOptions(&bytes.Buffer{})
	opts.Logger = slog.New(cancelOnWarn{opts.Logger.Handler(), cancel})
	if id, err := Fetch(ctx, client, opts); err == nil {
		t.Fatalf("Fetch() = %+v without an IMDSv2 token, want an error", id)
	}
}

// tokenFor gets a valid IMDSv2 token from h, so that a test server can play
// an IMDS that answers token-less requests.
func tokenFor(t *testing.T, h http.Handler) string {
	t.Helper()
	req := httptest.NewRequest(http.MethodPut, "/latest/api/token", nil)
	req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "300")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("token: %d %s", rec.Code, rec.Body.String())
	}
	return rec.Body.String()
}

// cancelOnWarn cancels a context at the first warning it logs.
type cancelOnWarn struct {
	slog.Handler
	cancel context.CancelFunc
}

func (c cancelOnWarn) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		c.cancel()
	}
	return c.Handler.Handle(ctx, r)
}
