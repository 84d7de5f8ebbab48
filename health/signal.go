// Package health owns node health for autonode: the signals that subsystems
// report, and (as it grows) the monitors, the five node conditions, events,
// repair signals and diagnostics built on them.
//
// Subsystems depend only on the small Reporter interface, so that they can
// report a problem the moment they see it without knowing how it is surfaced.
package health

import (
	"context"
	"fmt"
	"log/slog"
)

// Condition is one of the node conditions that node repair acts on.
type Condition string

// The node conditions, named as Karpenter's node repair expects them.
const (
	KernelReady              Condition = "KernelReady"
	NetworkingReady          Condition = "NetworkingReady"
	StorageReady             Condition = "StorageReady"
	AcceleratedHardwareReady Condition = "AcceleratedHardwareReady"
	ContainerRuntimeReady    Condition = "ContainerRuntimeReady"
)

// Severity says how bad a signal is.
type Severity int

const (
	// Info records something worth knowing that needs no action.
	Info Severity = iota
	// Warning is a problem the node survives; it becomes an event, not a
	// condition change.
	Warning
	// Fatal is a problem that makes the node unfit: its condition turns False
	// and node repair may replace the node.
	Fatal
)

// String returns the lower-case name of s.
func (s Severity) String() string {
	switch s {
	case Info:
		return "info"
	case Warning:
		return "warning"
	case Fatal:
		return "fatal"
	}
	return fmt.Sprintf("severity(%d)", int(s))
}

// Signal is one observation of node health.
type Signal struct {
	// Source names the subsystem or monitor that saw it, e.g. "network".
	Source string
	// Condition is the node condition the signal bears on.
	Condition Condition
	// Reason is a CamelCase machine-readable cause, e.g. "IPAMExhausted".
	Reason string
	// Severity says how bad it is.
	Severity Severity
	// Message is for humans.
	Message string
	// Cleared says the problem named by Reason is gone: a probe that failed
	// passes again. Reasons that clear by a quiet period need not send it.
	Cleared bool
}

// Reporter takes health signals. Implementations must be safe for concurrent
// use and must not block for long: subsystems call Report on their hot paths.
type Reporter interface {
	Report(ctx context.Context, s Signal)
}

// LogReporter reports signals as structured log lines.
type LogReporter struct {
	Logger *slog.Logger
}

// Report logs s at a level that matches its severity.
func (r LogReporter) Report(ctx context.Context, s Signal) {
	level := slog.LevelInfo
	switch s.Severity {
	case Warning:
		level = slog.LevelWarn
	case Fatal:
		level = slog.LevelError
	}
	r.Logger.LogAttrs(ctx, level, "health signal",
		slog.String("source", s.Source),
		slog.String("condition", string(s.Condition)),
		slog.String("reason", s.Reason),
		slog.String("severity", s.Severity.String()),
		slog.String("message", s.Message))
}

// ReportCorruptState is what a monitor does with a corrupt state file (a
// cursor) that it will replace: setAside moves the file out of the way for a
// human to read, the problem is logged, and sig is reported with a message
// that says where the file went. fresh says what the monitor does instead,
// e.g. "reading the journal afresh".
func ReportCorruptState(ctx context.Context, log *slog.Logger, r Reporter, sig Signal, path, what, fresh string, err error, setAside func(string) (string, error)) {
	msg := fmt.Sprintf("%s %s is corrupt; %s", what, path, fresh)
	if bad, serr := setAside(path); serr != nil {
		log.Error("could not move the corrupt "+what+" aside", "err", serr)
	} else {
		msg += "; kept as " + bad
	}
	log.Error(msg, "err", err)
	sig.Message = fmt.Sprintf("%s: %v", msg, err)
	r.Report(ctx, sig)
}
