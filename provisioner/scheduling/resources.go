package scheduling

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"

	corev1 "k8s.io/api/core/v1"
)

// Resource indexes a dimension of [Resources].
type Resource int

// The dimensions the scheduler models. Units: CPU in millicores, Memory and
// EphemeralStorage in bytes, the rest in counts.
const (
	CPU Resource = iota
	Memory
	Pods
	EphemeralStorage
	NvidiaGPU
	Neuron
	NeuronCore
	EFA
	NumResources
)

// Names of the extended resources the scheduler models.
const (
	ResourceNvidiaGPU  corev1.ResourceName = "nvidia.com/gpu"
	ResourceNeuron     corev1.ResourceName = "aws.amazon.com/neuron"
	ResourceNeuronCore corev1.ResourceName = "aws.amazon.com/neuroncore"
	ResourceEFA        corev1.ResourceName = "vpc.amazonaws.com/efa"
)

// Unlimited marks a dimension of NodePool limits that has no limit.
const Unlimited = int64(1<<63 - 1)

// ResourceName is the Kubernetes name of r.
func (r Resource) ResourceName() corev1.ResourceName {
	switch r {
	case CPU:
		return corev1.ResourceCPU
	case Memory:
		return corev1.ResourceMemory
	case Pods:
		return corev1.ResourcePods
	case EphemeralStorage:
		return corev1.ResourceEphemeralStorage
	case NvidiaGPU:
		return ResourceNvidiaGPU
	case Neuron:
		return ResourceNeuron
	case NeuronCore:
		return ResourceNeuronCore
	case EFA:
		return ResourceEFA
	}
	return ""
}

func resourceFor(name corev1.ResourceName) (Resource, bool) {
	for r := range NumResources {
		if r.ResourceName() == name {
			return r, true
		}
	}
	return 0, false
}

// Resources is a dense vector over the modelled dimensions, so that fit
// checks are a handful of integer compares.
type Resources [NumResources]int64

// NoLimits is a limits vector with every dimension Unlimited.
func NoLimits() Resources {
	var r Resources
	for i := range r {
		r[i] = Unlimited
	}
	return r
}

// Add returns r + o.
func (r Resources) Add(o Resources) Resources {
	for i := range r {
		r[i] += o[i]
	}
	return r
}

// Sub returns r - o.
func (r Resources) Sub(o Resources) Resources {
	for i := range r {
		r[i] -= o[i]
	}
	return r
}

// Fits reports whether r <= capacity in every dimension.
func (r Resources) Fits(capacity Resources) bool {
	for i := range r {
		if r[i] > capacity[i] {
			return false
		}
	}
	return true
}

// IsZero reports whether every dimension is zero.
func (r Resources) IsZero() bool { return r == Resources{} }

// String prints the non-zero dimensions, e.g. "cpu=1500m memory=2Gi pods=3".
func (r Resources) String() string {
	var b strings.Builder
	for i, v := range r {
		if v == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		res := Resource(i)
		b.WriteString(string(res.ResourceName()))
		b.WriteByte('=')
		if res == CPU {
			fmt.Fprintf(&b, "%dm", v)
		} else {
			fmt.Fprintf(&b, "%d", v)
		}
	}
	return b.String()
}

// List converts r to a ResourceList, leaving out zero dimensions.
func (r Resources) List() corev1.ResourceList {
	l := corev1.ResourceList{}
	for i, v := range r {
		if v == 0 {
			continue
		}
		res := Resource(i)
		if res == CPU {
			l[res.ResourceName()] = *resourceMilli(v)
		} else {
			l[res.ResourceName()] = *resourceInt(v, res)
		}
	}
	return l
}

// ResourcesFromList converts a ResourceList. A resource the scheduler does
// not model is an error naming it: no new node could be known to offer it.
func ResourcesFromList(l corev1.ResourceList) (Resources, error) {
	var r Resources
	for name, q := range l {
		res, ok := resourceFor(name)
		if !ok {
			if q.IsZero() {
				continue
			}
			return r, fmt.Errorf("resource %s is not one the scheduler models", name)
		}
		if res == CPU {
			r[res] = q.MilliValue()
		} else {
			r[res] = q.Value()
		}
	}
	return r, nil
}

// PodRequests computes a pod's effective requests the way kube-scheduler
// does: the larger of the app containers' sum (plus restartable "sidecar"
// init containers, which keep running) and the peak of the init sequence,
// plus the pod overhead. Pod-level resources, where set, override the
// aggregate for the dimensions they name. Every pod also takes one pod slot.
// (k8s.io/component-helpers implements this too, but it is not among the
// module's dependencies; this follows its PodRequests.)
func PodRequests(pod *corev1.Pod) (Resources, error) {
	var app, restartable, initPeak Resources
	for i := range pod.Spec.Containers {
		c, err := ResourcesFromList(pod.Spec.Containers[i].Resources.Requests)
		if err != nil {
			return Resources{}, fmt.Errorf("container %s: %w", pod.Spec.Containers[i].Name, err)
		}
		app = app.Add(c)
	}
	for i := range pod.Spec.InitContainers {
		ic := &pod.Spec.InitContainers[i]
		c, err := ResourcesFromList(ic.Resources.Requests)
		if err != nil {
			return Resources{}, fmt.Errorf("init container %s: %w", ic.Name, err)
		}
		if ic.RestartPolicy != nil && *ic.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			// A sidecar starts before the later init containers and runs
			// beside the app containers.
			app = app.Add(c)
			restartable = restartable.Add(c)
			c = restartable
		} else {
			c = c.Add(restartable)
		}
		initPeak = maxResources(initPeak, c)
	}
	req := maxResources(app, initPeak)
	if pod.Spec.Resources != nil {
		pl, err := ResourcesFromList(pod.Spec.Resources.Requests)
		if err != nil {
			return Resources{}, fmt.Errorf("pod-level resources: %w", err)
		}
		for name := range pod.Spec.Resources.Requests {
			if res, ok := resourceFor(name); ok && (res == CPU || res == Memory) {
				req[res] = pl[res]
			}
		}
	}
	if pod.Spec.Overhead != nil {
		o, err := ResourcesFromList(pod.Spec.Overhead)
		if err != nil {
			return Resources{}, fmt.Errorf("overhead: %w", err)
		}
		req = req.Add(o)
	}
	req[Pods] = 1
	return req, nil
}

func maxResources(a, b Resources) Resources {
	for i := range a {
		a[i] = max(a[i], b[i])
	}
	return a
}

func resourceMilli(v int64) *resource.Quantity {
	return resource.NewMilliQuantity(v, resource.DecimalSI)
}

func resourceInt(v int64, r Resource) *resource.Quantity {
	if r == Memory || r == EphemeralStorage {
		return resource.NewQuantity(v, resource.BinarySI)
	}
	return resource.NewQuantity(v, resource.DecimalSI)
}
