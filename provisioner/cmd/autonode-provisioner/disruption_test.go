package main

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
	"github.com/autonode/autonode/provisioner/cloud"
	"github.com/autonode/autonode/provisioner/disruption"
	sandboxec2 "github.com/autonode/autonode/sandbox/ec2"
)

// TestDisruption runs the disruption controller inside the provisioner
// binary against the real apiserver, scheduler and controller-manager and
// the EC2 emulator: emptiness, single-node delete (pods evicted through
// the Eviction API and placed again by kube-scheduler), single-node replace
// held back by a PodDisruptionBudget, an AMI rollout within a Drifted
// budget of 1, and repair with its unhealthy-share guard. Validation delay,
// consolidateAfter and the repair toleration are short.
func TestDisruption(t *testing.T) {
	f := startFixture(t, "--disruption-interval=500ms", "--consolidation-validation-delay=1s",
		"--repair-tolerations=Ready=30m,KernelReady=2s", "--repair-max-unhealthy-percent=50")
	ctx := context.Background()

	t.Run("emptiness", func(t *testing.T) {
		f.namespace(t, "empty")
		f.disruptionPool(t, "empty", nil, nil, "m5.large")
		f.pods(t, "empty", "empty", "500m", 1)
		victim := f.oneBoundClaim(t, "empty")
		if err := f.admin.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "empty", Name: "empty-a"}}); err != nil {
			t.Fatal(err)
		}
		f.awaitGone(t, victim)
		f.wantDecision(t, victim.Name, "Empty")
	})

	t.Run("single-node delete moves pods through the Eviction API", func(t *testing.T) {
		// Two m5.xlarge (4 vCPU) nodes, each with a 2500m pod that must
		// not be disrupted, and a 500m replica on one of them. Once the big
		// pod beside the replica goes, the replica fits beside the other
		// big pod: its node is deleted, the replica evicted, recreated by
		// its ReplicaSet and bound by kube-scheduler. The other node stays:
		// its pod carries autonode.dev/do-not-disrupt.
		f.namespace(t, "under")
		f.disruptionPool(t, "under", nil, nil, "m5.xlarge")
		for _, name := range []string{"big-0", "big-1"} {
			f.create(t, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: "under", Name: name, Annotations: map[string]string{disruption.AnnotationDoNotDisrupt: "true"}},
				Spec:       podSpec("under", "2500m"),
			})
		}
		f.deployment(t, "under", "small", 1, "500m", nil)
		f.eventually(t, 60*time.Second, "three pods bound on two nodes", func() (bool, error) {
			return f.boundPods(t, "under") == 3 && len(f.claims(t, "under")) == 2, nil
		})
		var node, big string
		var moving types.UID
		pods := f.podList(t, "under")
		for _, p := range pods {
			if strings.HasPrefix(p.Name, "small-") {
				node, moving = p.Spec.NodeName, p.UID
			}
		}
		for _, p := range pods {
			if p.Spec.NodeName == node && !strings.HasPrefix(p.Name, "small-") {
				big = p.Name
			}
		}
		victim := f.claimOfNode(t, "under", node)
		if err := f.admin.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "under", Name: big}}); err != nil {
			t.Fatal(err)
		}
		f.awaitGone(t, victim)
		f.wantDecision(t, victim.Name, "Underutilized")
		f.eventually(t, 30*time.Second, "the replica recreated and running on the remaining node", func() (bool, error) {
			running := false
			for _, p := range f.podList(t, "under") {
				if p.UID == moving {
					return false, nil // the evicted replica is still there
				}
				running = running || strings.HasPrefix(p.Name, "small-") && p.Spec.NodeName != "" && p.Spec.NodeName != node && p.Status.Phase == corev1.PodRunning
			}
			return running && len(f.claims(t, "under")) == 1, nil
		})
	})

	t.Run("a PodDisruptionBudget holds a single-node replace", func(t *testing.T) {
		// One m5.xlarge for a 500m replica guarded by a PDB that allows no
		// disruption. Once the pool also allows m5.large, a replacement at
		// half the price is possible, but only when the PDB lets it go.
		f.namespace(t, "guarded")
		pool := f.disruptionPool(t, "guarded", nil, nil, "m5.xlarge")
		labels := f.deployment(t, "guarded", "app", 1, "500m", nil)
		pdb := &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Namespace: "guarded", Name: "app"},
			Spec:       policyv1.PodDisruptionBudgetSpec{MaxUnavailable: ptr(intstr.FromInt32(0)), Selector: &metav1.LabelSelector{MatchLabels: labels}},
		}
		f.create(t, pdb)
		victim := f.oneBoundClaim(t, "guarded")
		f.eventually(t, 30*time.Second, "the PDB computed", func() (bool, error) {
			err := f.admin.Get(ctx, client.ObjectKeyFromObject(pdb), pdb)
			return err == nil && pdb.Status.CurrentHealthy == 1 && pdb.Status.ObservedGeneration == pdb.Generation, err
		})
		f.setTypes(t, pool, "m5.xlarge", "m5.large")
		time.Sleep(4 * time.Second) // several rounds and validation delays
		if err := f.admin.Get(ctx, client.ObjectKeyFromObject(&victim), &victim); err != nil || victim.DeletionTimestamp != nil {
			t.Fatalf("nodeclaim %s disrupted past a PDB allowing nothing (err %v)", victim.Name, err)
		}
		if n := len(f.claims(t, "guarded")); n != 1 {
			t.Fatalf("%d nodeclaims, want 1: nothing may launch while the PDB blocks", n)
		}
		patch := client.MergeFrom(pdb.DeepCopy())
		pdb.Spec.MaxUnavailable = ptr(intstr.FromInt32(1))
		if err := f.admin.Patch(ctx, pdb, patch); err != nil {
			t.Fatal(err)
		}
		f.awaitGone(t, victim)
		f.wantDecision(t, victim.Name, "Underutilized")
		f.eventually(t, 30*time.Second, "the replica running on an m5.large", func() (bool, error) {
			claims := f.claims(t, "guarded")
			if len(claims) != 1 || claims[0].Labels[corev1.LabelInstanceTypeStable] != "m5.large" {
				return false, nil
			}
			return f.boundPods(t, "guarded") == 1 && f.podList(t, "guarded")[0].Spec.NodeName == claims[0].Status.NodeName, nil
		})
	})

	t.Run("a graceful drain waits for a PDB past terminationGracePeriod", func(t *testing.T) {
		// A node the disruption controller took for a graceful reason
		// (Drifted on its Disrupting condition, as Executor.Taint sets
		// it) with a replica whose PDB allows nothing: unlike a user's
		// deletion (TestProvisioner's grace period case), the drain keeps
		// waiting after the 1s terminationGracePeriod.
		f.namespace(t, "patient")
		f.disruptionPool(t, "patient", func(p *v1.NodePool) {
			p.Spec.Template.Spec.TerminationGracePeriod = &metav1.Duration{Duration: time.Second}
		}, nil, "m5.large")
		labels := f.deployment(t, "patient", "app", 1, "500m", nil)
		pdb := &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Namespace: "patient", Name: "app"},
			Spec:       policyv1.PodDisruptionBudgetSpec{MaxUnavailable: ptr(intstr.FromInt32(0)), Selector: &metav1.LabelSelector{MatchLabels: labels}},
		}
		f.create(t, pdb)
		victim := f.oneBoundClaim(t, "patient")
		pod := f.podList(t, "patient")[0]
		patch := client.MergeFrom(victim.DeepCopy())
		victim.Status.Conditions = append(victim.Status.Conditions, metav1.Condition{Type: v1.ConditionDisrupting, Status: metav1.ConditionTrue,
			Reason: string(v1.ReasonDrifted), Message: "test", LastTransitionTime: metav1.Now()})
		if err := f.admin.Status().Patch(ctx, &victim, patch); err != nil {
			t.Fatal(err)
		}
		if err := f.admin.Delete(ctx, &victim); err != nil {
			t.Fatal(err)
		}
		f.eventually(t, 30*time.Second, "the eviction blocked", func() (bool, error) {
			var list eventsv1.EventList
			err := f.admin.List(ctx, &list)
			return slices.ContainsFunc(list.Items, func(e eventsv1.Event) bool {
				return e.Regarding.Name == victim.Name && e.Reason == "EvictionBlocked"
			}), err
		})
		time.Sleep(3 * time.Second) // past terminationGracePeriod
		var p corev1.Pod
		if err := f.admin.Get(ctx, client.ObjectKeyFromObject(&pod), &p); err != nil || p.DeletionTimestamp != nil {
			t.Fatalf("pod %s deleted past its PDB during a graceful drain (err %v)", pod.Name, err)
		}
		patch = client.MergeFrom(pdb.DeepCopy())
		pdb.Spec.MaxUnavailable = ptr(intstr.FromInt32(1))
		if err := f.admin.Patch(ctx, pdb, patch); err != nil {
			t.Fatal(err)
		}
		f.awaitGone(t, victim)
	})

	t.Run("a new AMI rolls one node at a time", func(t *testing.T) {
		// A NodeClass of its own, resolving images by a tag, so that the
		// new release drifts only this pool.
		f.addImage(t, "v1", time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC))
		f.create(t, &v1.NodeClass{
			ObjectMeta: metav1.ObjectMeta{Name: "rollout"},
			Spec: v1.NodeClassSpec{
				Role:                       "autonode-node",
				AMISelectorTerms:           []v1.AMISelectorTerm{{Tags: map[string]string{"rollout-test": "true"}}},
				SubnetSelectorTerms:        []v1.SelectorTerm{{Tags: map[string]string{"autonode.dev/discovery": "*"}}},
				SecurityGroupSelectorTerms: []v1.SecurityGroupSelectorTerm{{Tags: map[string]string{"autonode.dev/discovery": "test"}}},
			},
		})
		f.namespace(t, "rollout")
		f.disruptionPool(t, "rollout", func(p *v1.NodePool) {
			p.Spec.Template.Spec.NodeClassRef.Name = "rollout"
			p.Spec.Disruption.ConsolidateAfter = v1.NillableDuration{}
			p.Spec.Disruption.Budgets = []v1.Budget{{Nodes: "1", Reasons: []v1.DisruptionReason{v1.ReasonDrifted}}}
		}, nil, "m5.large")
		f.deployment(t, "rollout", "web", 2, "500m", antiAffine("web"))
		f.eventually(t, 60*time.Second, "two replicas on two nodes", func() (bool, error) {
			return f.boundPods(t, "rollout") == 2, nil
		})
		// One claim per replica: a round must not plan pods it already
		// placed onto a joining node a second time.
		old := map[string]string{}
		for _, c := range f.claims(t, "rollout") {
			old[c.Name] = c.Status.ImageID
		}
		if len(old) != 2 {
			t.Fatalf("%d nodeclaims for two anti-affine replicas, want 2", len(old))
		}
		newImage := f.addImage(t, "v2", time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC))
		maxInFlight := 0
		f.eventually(t, 75*time.Second, "every node on the new AMI with both replicas running", func() (bool, error) {
			inFlight, stale := 0, 0
			for _, c := range f.claims(t, "rollout") {
				if _, isOld := old[c.Name]; isOld {
					stale++
					if c.DeletionTimestamp != nil || f.isDisrupting(&c) {
						inFlight++
					}
				}
			}
			maxInFlight = max(maxInFlight, inFlight)
			return stale == 0 && f.boundPods(t, "rollout") == 2, nil
		})
		if n := len(f.claims(t, "rollout")); n != 2 {
			t.Errorf("%d nodeclaims after the rollout, want 2 (one replacement per node)", n)
		}
		for _, c := range f.claims(t, "rollout") {
			if c.Status.ImageID != newImage.ID {
				t.Errorf("nodeclaim %s runs %s, want the new AMI %s", c.Name, c.Status.ImageID, newImage.ID)
			}
		}
		if maxInFlight != 1 {
			t.Errorf("at most %d old nodes disrupted at once, want 1 (Drifted budget of 1)", maxInFlight)
		}
		for name, image := range old {
			if image == newImage.ID {
				t.Fatalf("nodeclaim %s had the new AMI before its release", name)
			}
			f.wantDecision(t, name, "Drifted")
		}
	})

	t.Run("repair replaces an unhealthy node; the guard stops a mass repair", func(t *testing.T) {
		// Two nodes; KernelReady is tolerated for 2s and repair stops
		// while more than 50% of the pool is unhealthy.
		f.namespace(t, "repair")
		f.disruptionPool(t, "repair", func(p *v1.NodePool) { p.Spec.Disruption.ConsolidateAfter = v1.NillableDuration{} }, nil, "m5.large")
		f.deployment(t, "repair", "db", 2, "500m", antiAffine("db"))
		f.eventually(t, 60*time.Second, "two replicas on two nodes", func() (bool, error) {
			return f.boundPods(t, "repair") == 2, nil
		})
		var claims []v1.NodeClaim
		for _, p := range f.podList(t, "repair") {
			claims = append(claims, f.claimOfNode(t, "repair", p.Spec.NodeName))
		}
		// Both unhealthy: at least two thirds of the pool (a third, empty
		// node may have come from a provisioning round), over the guard.
		for _, c := range claims {
			f.setKernelReady(t, c.Status.NodeName, corev1.ConditionFalse)
		}
		time.Sleep(5 * time.Second) // past the toleration, several rounds
		for _, c := range f.claims(t, "repair") {
			if c.DeletionTimestamp != nil || f.isDisrupting(&c) {
				t.Fatalf("nodeclaim %s repaired while the whole pool is unhealthy", c.Name)
			}
		}
		// One recovers: 50% unhealthy, within the guard; the other is
		// replaced.
		f.setKernelReady(t, claims[0].Status.NodeName, corev1.ConditionTrue)
		f.awaitGone(t, claims[1])
		f.wantDecision(t, claims[1].Name, "Unhealthy")
		if err := f.admin.Get(ctx, client.ObjectKeyFromObject(&claims[0]), &claims[0]); err != nil || claims[0].DeletionTimestamp != nil {
			t.Errorf("the healthy nodeclaim %s was disrupted (err %v)", claims[0].Name, err)
		}
		f.eventually(t, 60*time.Second, "both replicas running again", func() (bool, error) {
			return f.boundPods(t, "repair") == 2, nil
		})
	})
}

// disruptionPool makes a pool (see pool) of the given instance types with
// consolidateAfter 2s, then applies mutate.
func (f *fixture) disruptionPool(t *testing.T, name string, mutate func(*v1.NodePool), limits corev1.ResourceList, instanceTypes ...string) *v1.NodePool {
	t.Helper()
	pool := f.pool(t, name, limits, v1.NodeSelectorRequirementWithMinValues{
		Key: corev1.LabelInstanceTypeStable, Operator: corev1.NodeSelectorOpIn, Values: instanceTypes,
	})
	patch := client.MergeFrom(pool.DeepCopy())
	pool.Spec.Disruption.ConsolidateAfter = v1.After(2 * time.Second)
	if mutate != nil {
		mutate(pool)
	}
	if err := f.admin.Patch(context.Background(), pool, patch); err != nil {
		t.Fatal(err)
	}
	return pool
}

// setTypes changes the instance types a pool allows.
func (f *fixture) setTypes(t *testing.T, pool *v1.NodePool, instanceTypes ...string) {
	t.Helper()
	patch := client.MergeFrom(pool.DeepCopy())
	for i, r := range pool.Spec.Template.Spec.Requirements {
		if r.Key == corev1.LabelInstanceTypeStable {
			pool.Spec.Template.Spec.Requirements[i].Values = instanceTypes
		}
	}
	if err := f.admin.Patch(context.Background(), pool, patch); err != nil {
		t.Fatal(err)
	}
}

// deployment runs replicas of a pod asking for cpu on the pool named like
// the namespace, and returns its pod labels.
func (f *fixture) deployment(t *testing.T, ns, name string, replicas int32, cpu string, affinity *corev1.Affinity) map[string]string {
	t.Helper()
	labels := map[string]string{"app": name}
	spec := podSpec(ns, cpu)
	spec.Affinity = affinity
	f.create(t, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec},
		},
	})
	return labels
}

// antiAffine keeps the replicas of app on different nodes.
func antiAffine(app string) *corev1.Affinity {
	return &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
		TopologyKey: corev1.LabelHostname, LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
	}}}}
}

// addImage releases an autonode image tagged for the rollout NodeClass.
func (f *fixture) addImage(t *testing.T, version string, created time.Time) sandboxec2.Image {
	t.Helper()
	return f.ec2.AddImage(sandboxec2.Image{
		Name: "rollout-test-x86_64-" + version, OwnerID: f.vpc.AccountID(), Architecture: "x86_64",
		CreationDate: created, Tags: map[string]string{"rollout-test": "true"},
	})
}

// oneBoundClaim waits for every pod of the namespace to be bound and the
// pool of the same name to have one NodeClaim, and returns it.
func (f *fixture) oneBoundClaim(t *testing.T, pool string) v1.NodeClaim {
	t.Helper()
	f.eventually(t, 60*time.Second, "the pods of "+pool+" bound to one node", func() (bool, error) {
		pods := f.podList(t, pool)
		if n := len(f.claims(t, pool)); n > 1 {
			t.Fatalf("%d nodeclaims for pool %s, want 1: a round planned its pods twice", n, pool)
		}
		return len(pods) > 0 && f.boundPods(t, pool) == len(pods), nil
	})
	return f.claims(t, pool)[0]
}

func (f *fixture) boundPods(t *testing.T, ns string) int {
	t.Helper()
	n := 0
	for _, p := range f.podList(t, ns) {
		if p.Spec.NodeName != "" && p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
			n++
		}
	}
	return n
}

func (f *fixture) claimOfNode(t *testing.T, pool, node string) v1.NodeClaim {
	t.Helper()
	for _, c := range f.claims(t, pool) {
		if c.Status.NodeName == node {
			return c
		}
	}
	t.Fatalf("no nodeclaim of pool %s for node %s", pool, node)
	return v1.NodeClaim{}
}

func (f *fixture) isDisrupting(c *v1.NodeClaim) bool {
	for _, cond := range c.Status.Conditions {
		if cond.Type == v1.ConditionDisrupting && cond.Status == metav1.ConditionTrue {
			return true
		}
	}
	return false
}

// awaitGone waits until a NodeClaim, its Node and its instance are gone.
func (f *fixture) awaitGone(t *testing.T, c v1.NodeClaim) {
	t.Helper()
	ctx := context.Background()
	_, instance, _ := cloud.ParseProviderID(c.Status.ProviderID)
	f.eventually(t, 45*time.Second, "nodeclaim "+c.Name+", its node and its instance gone", func() (bool, error) {
		err := f.admin.Get(ctx, client.ObjectKeyFromObject(&c), &v1.NodeClaim{})
		if !apierrors.IsNotFound(err) {
			return false, err
		}
		err = f.admin.Get(ctx, client.ObjectKey{Name: c.Status.NodeName}, &corev1.Node{})
		return apierrors.IsNotFound(err) && f.instanceGone(ctx, instance), nil
	})
}

// wantDecision checks that the disruption controller recorded its decision
// on the NodeClaim, naming the reason.
func (f *fixture) wantDecision(t *testing.T, claim, reason string) {
	t.Helper()
	var list eventsv1.EventList
	if err := f.admin.List(context.Background(), &list); err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, e := range list.Items {
		if e.Regarding.Kind == "NodeClaim" && e.Regarding.Name == claim && e.Reason == "DisruptionDecided" {
			if strings.Contains(e.Note, reason) {
				return
			}
			seen = append(seen, e.Note)
		}
	}
	t.Errorf("no DisruptionDecided event naming %s on nodeclaim %s (saw %q)", reason, claim, seen)
}

// setKernelReady sets a Node's KernelReady condition as the node agent's
// health reporter would, moving lastTransitionTime only on a change.
func (f *fixture) setKernelReady(t *testing.T, node string, status corev1.ConditionStatus) {
	t.Helper()
	ctx := context.Background()
	var n corev1.Node
	if err := f.admin.Get(ctx, client.ObjectKey{Name: node}, &n); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(n.DeepCopy())
	now := metav1.Now()
	cond := corev1.NodeCondition{Type: "KernelReady", Status: status, Reason: "Test", LastHeartbeatTime: now, LastTransitionTime: now}
	if i := slices.IndexFunc(n.Status.Conditions, func(c corev1.NodeCondition) bool { return c.Type == "KernelReady" }); i >= 0 {
		n.Status.Conditions[i] = cond
	} else {
		n.Status.Conditions = append(n.Status.Conditions, cond)
	}
	if err := f.admin.Status().Patch(ctx, &n, patch); err != nil {
		t.Fatal(err)
	}
}
