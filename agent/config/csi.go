package config

import (
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// CSI configures the EBS CSI node service (docs/storage.md, "CSI node
// service"): the node half of an EBS CSI driver, registered with the
// kubelet. The controller half, which creates and attaches volumes, runs
// elsewhere.
type CSI struct {
	// Enabled serves the CSI node service. Default is true.
	Enabled bool `json:"enabled"`
	// DriverName is the CSI driver name that PersistentVolumes, the
	// CSIDriver object and the controller use. Default is ebs.csi.aws.com,
	// the upstream EBS CSI driver's, so that its controller and existing
	// volumes work unchanged.
	DriverName string `json:"driverName"`
	// Endpoint is the CSI socket the kubelet calls. Empty means
	// /var/lib/kubelet/plugins/<driverName>/csi.sock.
	Endpoint string `json:"endpoint,omitempty"`
	// RegistrationDir is the kubelet's plugin-registration folder, where
	// the registration socket <driverName>-reg.sock goes. Default is
	// /var/lib/kubelet/plugins_registry.
	RegistrationDir string `json:"registrationDir"`
}

// DefaultCSI returns the CSI node service defaults.
func DefaultCSI() CSI {
	return CSI{Enabled: true, DriverName: "ebs.csi.aws.com", RegistrationDir: "/var/lib/kubelet/plugins_registry"}
}

// validateCSI appends a FieldError for each bad value of the storage.csi
// section.
func validateCSI(c CSI, bad func(field, flag, value, want string)) {
	const p = "storage.csi."
	if !validCSIName(c.DriverName) {
		bad(p+"driverName", "csi-driver-name", c.DriverName,
			"must be a CSI driver name: at most 63 characters of letters, digits, '-' and '.', beginning and ending with a letter or digit")
	}
	if c.Endpoint != "" && !filepath.IsAbs(c.Endpoint) {
		bad(p+"endpoint", "", c.Endpoint, "must be an absolute socket path, or empty for /var/lib/kubelet/plugins/<driverName>/csi.sock")
	}
	// A unix socket path holds at most 107 bytes.
	if len(c.Endpoint) > 107 {
		bad(p+"endpoint", "", c.Endpoint, "must be at most 107 bytes long (a unix socket path)")
	}
	if !filepath.IsAbs(c.RegistrationDir) {
		bad(p+"registrationDir", "", c.RegistrationDir, "must be an absolute path")
	}
}

// validCSIName applies the CSI spec's rule for plugin names as the
// apiserver checks PersistentVolumes' and CSINode's driver names: at most 63
// characters, a DNS-1123 subdomain once lower-cased.
func validCSIName(name string) bool {
	return len(name) <= 63 && len(validation.IsDNS1123Subdomain(strings.ToLower(name))) == 0
}
