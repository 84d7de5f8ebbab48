package health

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"
)

func TestLogReporterLevels(t *testing.T) {
	tests := []struct {
		severity Severity
		level    string
	}{
		{Info, "INFO"},
		{Warning, "WARN"},
		{Fatal, "ERROR"},
	}
	for _, tt := range tests {
		t.Run(tt.severity.String(), func(t *testing.T) {
			var buf bytes.Buffer
			r := LogReporter{Logger: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
			r.Report(context.Background(), Signal{Source: "network", Condition: NetworkingReady, Reason: "IPAMExhausted", Severity: tt.severity, Message: "no free IPs"})
			var line map[string]string
			if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
				t.Fatalf("log line %q: %v", buf.String(), err)
			}
			want := map[string]string{"level": tt.level, "source": "network", "condition": "NetworkingReady",
				"reason": "IPAMExhausted", "severity": tt.severity.String(), "message": "no free IPs"}
			for k, v := range want {
				if line[k] != v {
					t.Errorf("%s = %q, want %q", k, line[k], v)
				}
			}
		})
	}
}

func TestSeverityString(t *testing.T) {
	if got := Severity(7).String(); got != "severity(7)" {
		t.Errorf("Severity(7).String() = %q", got)
	}
}
