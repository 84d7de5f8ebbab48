package v1

import (
	"encoding/json"
	"fmt"
	"time"
)

// Never is the NillableDuration that never elapses.
const Never = "Never"

// NillableDuration is a duration, or "Never". Its zero value (Duration nil)
// means Never.
//
// +kubebuilder:validation:Type=string
// +kubebuilder:validation:Pattern=`^(([0-9]+(s|m|h))+|Never)$`
type NillableDuration struct {
	Duration *time.Duration `json:"-"`
}

// MarshalJSON writes the duration as Go formats it, or "Never".
func (d NillableDuration) MarshalJSON() ([]byte, error) {
	if d.Duration == nil {
		return json.Marshal(Never)
	}
	return json.Marshal(d.Duration.String())
}

// UnmarshalJSON reads a Go duration string or "Never".
func (d *NillableDuration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	if s == Never {
		d.Duration = nil
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	d.Duration = &v
	return nil
}

// After wraps a duration that does elapse.
func After(v time.Duration) NillableDuration { return NillableDuration{Duration: &v} }
