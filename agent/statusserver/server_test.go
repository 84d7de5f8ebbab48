package statusserver

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/autonode/autonode/agent/subsystem"
)

type statuses []subsystem.Status

func (s statuses) Status() []subsystem.Status { return s }

func serve(t *testing.T, src StatusSource) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv, err := Listen("127.0.0.1:0", src, reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return "http://" + srv.Addr()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestEndpoints(t *testing.T) {
	ready := statuses{{Name: "node", Ready: true}, {Name: "network", Ready: true}}
	notReady := statuses{{Name: "node", Ready: true}, {Name: "network", Reason: "no ENI yet"}}
	tests := []struct {
		name     string
		src      StatusSource
		path     string
		code     int
		contains []string
	}{
		{"healthz", notReady, "/healthz", 200, []string{"ok"}},
		{"ready", ready, "/readyz", 200, []string{"ok"}},
		{"not ready", notReady, "/readyz", 503, []string{"not ready"}},
		{"ready verbose", ready, "/readyz?verbose", 200, []string{"[+]node ok", "[+]network ok", "readyz check passed"}},
		{"not ready verbose", notReady, "/readyz?verbose", 503, []string{"[+]node ok", "[-]network not ready: no ENI yet", "readyz check failed"}},
		{"optional not ready", statuses{{Name: "node", Ready: true}, {Name: "diagnostics", Optional: true, Reason: "no CRD"}}, "/readyz?verbose", 200, []string{"[-]diagnostics not ready (optional): no CRD", "readyz check passed"}},
		{"metrics", ready, "/metrics", 200, []string{"go_goroutines", "process_cpu_seconds_total"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := get(t, serve(t, tt.src)+tt.path)
			if code != tt.code {
				t.Errorf("GET %s = %d, want %d", tt.path, code, tt.code)
			}
			for _, want := range tt.contains {
				if !strings.Contains(body, want) {
					t.Errorf("GET %s body lacks %q:\n%s", tt.path, want, body)
				}
			}
		})
	}
}

func TestListenFailsOnBusyPort(t *testing.T) {
	url := serve(t, statuses{})
	addr := strings.TrimPrefix(url, "http://")
	if _, err := Listen(addr, statuses{}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("Listen on a busy port = %v, want an error naming %s", err, addr)
	}
}
