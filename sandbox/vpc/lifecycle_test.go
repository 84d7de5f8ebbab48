package vpc

import (
	"errors"
	"testing"
)

func TestInstanceLifecycle(t *testing.T) {
	t.Parallel()
	m := newModel(t, Config{})
	sg := m.AddSecurityGroup("nodes", "n", map[string]string{"k": "v"})
	subnet := m.Subnets()[1]
	inst, err := m.Launch(LaunchSpec{
		InstanceType: "m5.large", SubnetID: subnet.ID, ImageID: "ami-0123", SecurityGroupIDs: []string{sg.ID},
		Tags: map[string]string{"a": "b"}, Spot: true, Pending: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if inst.State != StatePending || inst.ImageID != "ami-0123" || !inst.Spot || inst.Zone != subnet.Zone {
		t.Fatalf("launched %+v", inst)
	}
	enis, _ := m.InstanceENIs(inst.ID)
	if len(enis) != 1 || len(enis[0].SecurityGroupIDs) != 1 || enis[0].SecurityGroupIDs[0] != sg.ID {
		t.Fatalf("primary eni %+v", enis)
	}
	// A secondary ENI that is not deleted on termination survives, detached.
	extra, err := m.CreateENI(ENISpec{SubnetID: subnet.ID}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.AttachENI(extra.ID, inst.ID, 1, 0, nil); err != nil {
		t.Fatal(err)
	}
	free := func() int { s, _ := m.Subnet(subnet.ID); return s.AvailableIPs }
	before := free()

	steps := []struct {
		to      InstanceState
		wantErr bool
	}{
		{StateTerminated, true}, // pending cannot skip shutting-down
		{StateRunning, false},
		{StateRunning, false}, // the state it has: no-op
		{StatePending, true},
		{StateShuttingDown, false},
		{StateTerminated, false},
		{StateRunning, true},
	}
	for _, s := range steps {
		_, err := m.SetInstanceState(inst.ID, s.to)
		if (err != nil) != s.wantErr || (err != nil && !errors.Is(err, ErrInvalid)) {
			t.Fatalf("to %s: %v, want error %v", s.to, err, s.wantErr)
		}
	}
	got, _ := m.Instance(inst.ID)
	if got.State != StateTerminated || got.PrivateIP.IsValid() || len(got.ENIIDs) != 0 {
		t.Errorf("terminated instance %+v", got)
	}
	if free() != before+1 {
		t.Errorf("free addresses %d, want %d: the primary address comes back", free(), before+1)
	}
	if e, err := m.ENI(extra.ID); err != nil || e.Attachment != nil || e.Status != ENIAvailable {
		t.Errorf("secondary eni after termination: %+v %v", e, err)
	}
	if _, err := m.SetInstanceState("i-nope", StateRunning); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown instance: %v", err)
	}
	if _, err := m.Launch(LaunchSpec{InstanceType: "m5.large", SecurityGroupIDs: []string{"sg-nope"}}); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown group: %v", err)
	}
}
