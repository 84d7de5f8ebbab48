package csi

import (
	"context"
	"fmt"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// identity is the CSI Identity service.
type identity struct {
	csi.UnimplementedIdentityServer
	d *Driver
}

func (s *identity) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: s.d.opts.DriverName, VendorVersion: s.d.opts.Version}, nil
}

// GetPluginCapabilities offers no CONTROLLER_SERVICE: the controller half
// runs elsewhere. Volumes are bound to a zone, and a published file system
// grows while in use.
func (s *identity) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	return &csi.GetPluginCapabilitiesResponse{Capabilities: []*csi.PluginCapability{
		{Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{
			Type: csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS,
		}}},
		{Type: &csi.PluginCapability_VolumeExpansion_{VolumeExpansion: &csi.PluginCapability_VolumeExpansion{
			Type: csi.PluginCapability_VolumeExpansion_ONLINE,
		}}},
	}}, nil
}

// Probe reports not ready, with the package to install, when a tool that
// every volume needs is missing.
func (s *identity) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	if err := checkTools(coreTools()...); err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	return &csi.ProbeResponse{Ready: wrapperspb.Bool(true)}, nil
}

// supportedVersions are the CSI versions offered to the kubelet, as the
// node-driver-registrar offers them.
func supportedVersions() []string { return []string{"1.0.0"} }

// registration answers the kubelet's plugin watcher, which dials every
// socket that appears in its plugins_registry folder.
type registration struct {
	registerapi.UnimplementedRegistrationServer
	d *Driver
}

func (r *registration) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              r.d.opts.DriverName,
		Endpoint:          r.d.opts.Endpoint,
		SupportedVersions: supportedVersions(),
	}, nil
}

// NotifyRegistrationStatus records the kubelet's verdict; on a refusal the
// kubelet retries by itself, so the driver only reports it.
func (r *registration) NotifyRegistrationStatus(_ context.Context, st *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if st.GetPluginRegistered() {
		r.d.setRegistered(nil)
		r.d.log.Info("registered with the kubelet", "socket", r.d.regSock)
	} else {
		r.d.setRegistered(fmt.Errorf("the kubelet refused it: %s", st.GetError()))
		r.d.log.Error("the kubelet refused the registration", "socket", r.d.regSock, "err", st.GetError())
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}
