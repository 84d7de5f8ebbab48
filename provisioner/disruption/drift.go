package disruption

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
	"github.com/autonode/autonode/provisioner/scheduling"
)

// HashVersion is the version of TemplateHash; bump it when the hashed
// fields change.
const HashVersion = "v1"

// hashed is what TemplateHash covers: the template fields that a running
// node cannot take on without being replaced. Requirements are left out
// (they drift only when the node no longer meets them, see Drifted), and so
// are expireAfter and terminationGracePeriod, which apply to running
// NodeClaims as they are and would otherwise replace every node on a tweak.
type hashed struct {
	Labels        map[string]string `json:"labels,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
	Taints        []corev1.Taint    `json:"taints,omitempty"`
	StartupTaints []corev1.Taint    `json:"startupTaints,omitempty"`
	NodeClass     string            `json:"nodeClass"`
}

// TemplateHash is the hash of np's template that NodeClaims carry in
// AnnotationNodePoolHash. Taints are compared as sets; map keys are sorted
// by encoding/json.
func TemplateHash(np *v1.NodePool) string {
	t := np.Spec.Template
	h := hashed{
		Labels:        t.ObjectMeta.Labels,
		Annotations:   t.ObjectMeta.Annotations,
		Taints:        sortedTaints(t.Spec.Taints),
		StartupTaints: sortedTaints(t.Spec.StartupTaints),
		NodeClass:     t.Spec.NodeClassRef.Name,
	}
	b, err := json.Marshal(h)
	if err != nil {
		// Only maps of strings and taints: encoding cannot fail.
		panic(fmt.Sprintf("encoding nodepool %s template: %v", np.Name, err))
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

func sortedTaints(ts []corev1.Taint) []corev1.Taint {
	out := make([]corev1.Taint, len(ts))
	for i, t := range ts {
		out[i] = corev1.Taint{Key: t.Key, Value: t.Value, Effect: t.Effect}
	}
	slices.SortFunc(out, func(a, b corev1.Taint) int {
		return cmp.Or(cmp.Compare(a.Key, b.Key), cmp.Compare(a.Value, b.Value), cmp.Compare(a.Effect, b.Effect))
	})
	return out
}

// Drifted says why n no longer matches its pool or NodeClass, or "" when it
// does:
//   - its template hash (same hash version) differs from the pool's;
//   - a pool requirement on a label the node carries no longer holds (a
//     requirement on a label the node lacks is not judged: the node may
//     simply not carry that label);
//   - its AMI differs from the one its NodeClass resolves to for its
//     architecture now.
func Drifted(n *Node, p *Pool, amis map[string]map[string]string) string {
	if p == nil {
		return ""
	}
	if n.TemplateHashVersion == HashVersion && n.TemplateHash != "" && p.TemplateHash != "" && n.TemplateHash != p.TemplateHash {
		return fmt.Sprintf("nodepool %s template changed (hash %s, now %s)", p.Name, n.TemplateHash, p.TemplateHash)
	}
	for _, r := range p.Requirements {
		v, ok := n.Labels[r.Key]
		if ok && !scheduling.LabelMatches(r.Operator, r.Values, v, true) {
			return fmt.Sprintf("label %s=%s no longer meets nodepool %s requirement %s %s %v", r.Key, v, p.Name, r.Key, r.Operator, r.Values)
		}
	}
	if want := amis[n.NodeClass][n.Arch]; want != "" && n.ImageID != "" && n.ImageID != want {
		return fmt.Sprintf("nodeclass %s resolves %s to %s, node runs %s", n.NodeClass, n.Arch, want, n.ImageID)
	}
	return ""
}

// StampTemplateHash records pool's template hash (and HashVersion) on a
// NodeClaim made from it. Whatever creates NodeClaims (provisioning and the
// replacements of disruption) calls it, so that template drift can be told.
func StampTemplateHash(claim *v1.NodeClaim, pool *v1.NodePool) {
	if claim.Annotations == nil {
		claim.Annotations = map[string]string{}
	}
	claim.Annotations[AnnotationNodePoolHash] = TemplateHash(pool)
	claim.Annotations[AnnotationNodePoolHashVersion] = HashVersion
}
