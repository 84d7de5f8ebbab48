// Package statusserver serves the agent's own status on a loopback address:
// /healthz (the process answers), /readyz (every subsystem is ready; a
// per-subsystem breakdown with ?verbose, in the kube-apiserver's format) and
// /metrics (Prometheus).
package statusserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/autonode/autonode/agent/subsystem"
)

// StatusSource is what the server reports on.
type StatusSource interface {
	Status() []subsystem.Status
}

// Server is the status HTTP server.
type Server struct {
	logger   *slog.Logger
	listener net.Listener
	srv      *http.Server
}

// Listen binds addr now, so that a busy port fails start-up rather than a
// later Run.
func Listen(addr string, status StatusSource, gatherer prometheus.Gatherer, logger *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("status server on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("GET /readyz", readyHandler(status))
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelError)}))
	return &Server{
		logger:   logger,
		listener: ln,
		srv:      &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second},
	}, nil
}

// Addr is the bound address (useful with port 0).
func (s *Server) Addr() string { return s.listener.Addr().String() }

// Run serves until ctx ends, then shuts down within a few seconds.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.listener) }()
	s.logger.Info("status server listening", "address", s.Addr())
	select {
	case err := <-errc:
		return fmt.Errorf("status server on %s: %w", s.Addr(), err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("status server shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// readyHandler answers 200 when every subsystem is ready and 503 otherwise.
// With ?verbose it lists each subsystem as [+]name ok or [-]name reason.
func readyHandler(status StatusSource) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		statuses := status.Status()
		ready := true
		for _, st := range statuses {
			ready = ready && (st.Ready || st.Optional)
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		if _, verbose := r.URL.Query()["verbose"]; !verbose {
			if ready {
				fmt.Fprintln(w, "ok")
			} else {
				fmt.Fprintln(w, "not ready")
			}
			return
		}
		for _, st := range statuses {
			if st.Ready {
				fmt.Fprintf(w, "[+]%s ok\n", st.Name)
			} else if st.Optional {
				fmt.Fprintf(w, "[-]%s not ready (optional): %s\n", st.Name, st.Reason)
			} else {
				fmt.Fprintf(w, "[-]%s not ready: %s\n", st.Name, st.Reason)
			}
		}
		if ready {
			fmt.Fprintln(w, "readyz check passed")
		} else {
			fmt.Fprintln(w, "readyz check failed")
		}
	})
}
