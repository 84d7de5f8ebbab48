package csi

import (
	"errors"
	"fmt"
	"os/exec"
)

// toolPackage names the distribution package that ships each tool the
// driver runs, for the error when one is missing.
func toolPackage(tool string) string {
	switch tool {
	case "mkfs.xfs", "xfs_growfs":
		return "xfsprogs"
	case "mkfs.ext2", "mkfs.ext3", "mkfs.ext4", "resize2fs":
		return "e2fsprogs"
	case "blkid":
		return "util-linux"
	case "mount", "umount":
		return "util-linux (Debian: mount)"
	}
	return "the package that provides it"
}

// coreTools are needed for every volume: probing for a file system,
// mounting, unmounting, and the default file system, ext4.
func coreTools() []string { return []string{"blkid", "mount", "umount", "mkfs.ext4"} }

// formatTools are needed to create a file system of fsType. The fsck that
// SafeFormatAndMount runs before mounting an existing one is optional: it
// skips the check when fsck is missing.
func formatTools(fsType string) []string { return []string{"mkfs." + fsType} }

// resizeTools are needed to grow a file system of fsType.
func resizeTools(fsType string) []string {
	if fsType == "xfs" {
		return []string{"xfs_growfs"}
	}
	return []string{"resize2fs"}
}

// checkTools returns an error naming each missing tool and its package.
func checkTools(tools ...string) error {
	var errs []error
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			errs = append(errs, fmt.Errorf("%s is not installed (install %s)", t, toolPackage(t)))
		}
	}
	return errors.Join(errs...)
}
