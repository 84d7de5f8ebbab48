//go:build !cgo

package diagnostics

import (
	"context"
	"errors"
	"time"
)

// readJournalUnit cannot read the journal without cgo: sdjournal loads
// libsystemd at run time through cgo.
func readJournalUnit(ctx context.Context, dir, unit string, since time.Time, max int64) ([]byte, error) {
	return nil, errors.New("this agent was built without cgo, which reading the journal needs")
}
