package disruption

import (
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
	"github.com/autonode/autonode/provisioner/scheduling"
)

// Method names, as Decisions and metrics report them.
const (
	MethodRepair     = "repair"
	MethodExpiry     = "expiry"
	MethodDrift      = "drift"
	MethodEmptiness  = "emptiness"
	MethodMultiNode  = "multi-node"
	MethodSingleNode = "single-node"
)

// Command is one decision: take Candidates away for Reason, after launching
// Replacements. Placement says where the simulation put each pod that has
// to move (a surviving node's name, or a replacement's placeholder name).
type Command struct {
	Method       string
	Reason       v1.DisruptionReason
	Candidates   []*Node
	Replacements []scheduling.NewNode
	Placement    map[types.UID]string
	// Price is the candidates' $/h; ReplacementPrice the most the
	// replacements can cost whichever listed type and offering the launch
	// picks. Savings = Price - ReplacementPrice.
	Price, ReplacementPrice float64
	PodsMoved               int
	// Why is the human reason (drift cause, unhealthy condition, ...).
	Why     string
	Decided time.Time
}

// Forceful reports whether the command is for a forceful reason.
func (c *Command) Forceful() bool { return !Graceful(c.Reason) }

// Savings is the $/h the command saves (negative when replacements may cost
// more, as a drift replacement may).
func (c *Command) Savings() float64 { return c.Price - c.ReplacementPrice }

// Consolidation reports whether the command comes from consolidation, which
// is re-validated after the validation delay.
func (c *Command) Consolidation() bool {
	return c.Reason == v1.ReasonEmpty || c.Reason == v1.ReasonUnderutilized
}

// Decision is the structured, printable record of a command, for Events on
// the NodeClaims and Nodes, logs and metrics.
type Decision struct {
	Method       string   `json:"method"`
	Reason       string   `json:"reason"`
	Candidates   []string `json:"candidates"`
	NodeClaims   []string `json:"nodeClaims"`
	Replacements []string `json:"replacements,omitempty"` // instance types, cheapest first, per replacement
	// SavingsPerHour is in $/h.
	SavingsPerHour float64 `json:"savingsPerHour"`
	PodsMoved      int     `json:"podsMoved"`
	Why            string  `json:"why,omitempty"`
}

// Decision describes the command.
func (c *Command) Decision() Decision {
	d := Decision{Method: c.Method, Reason: string(c.Reason), SavingsPerHour: c.Savings(), PodsMoved: c.PodsMoved, Why: c.Why}
	for _, n := range c.Candidates {
		d.Candidates = append(d.Candidates, n.Name)
		d.NodeClaims = append(d.NodeClaims, n.NodeClaim)
	}
	for _, r := range c.Replacements {
		var names []string
		for i, it := range r.InstanceTypes {
			if i == 3 {
				names = append(names, fmt.Sprintf("+%d", len(r.InstanceTypes)-3))
				break
			}
			names = append(names, it.Name)
		}
		d.Replacements = append(d.Replacements, r.NodePool+"/"+strings.Join(names, "|"))
	}
	return d
}

// String is the Event message.
func (d Decision) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%s): disrupting %s", d.Reason, d.Method, strings.Join(d.Candidates, ", "))
	if len(d.Replacements) > 0 {
		fmt.Fprintf(&b, ", replacing with %s", strings.Join(d.Replacements, ", "))
	}
	fmt.Fprintf(&b, "; %d pods move; saves $%.4f/h", d.PodsMoved, d.SavingsPerHour)
	if d.Why != "" {
		fmt.Fprintf(&b, "; %s", d.Why)
	}
	return b.String()
}
