package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path"
	"time"

	"github.com/autonode/autonode/agent/storage/ebs"
)

// ebsID is `autonode-agent ebs-id DEVICE`, the udev PROGRAM that names EBS
// volumes as they attach (rules in docs/storage.md).
func ebsID(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runEBSID(ctx, ebs.NVMe{}, args, stdout, stderr)
}

func runEBSID(ctx context.Context, id ebs.Identifier, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("autonode-agent ebs-id", flag.ContinueOnError)
	fs.SetOutput(stderr)
	format := fs.String("format", "names", "Output `format`: names (\"vol-0abc… xvdba\"), links (symlink paths under /dev, for SYMLINK+=\"%c\") or env (KEY=value lines, for IMPORT{program}).")
	timeout := fs.Duration("timeout", 10*time.Second, "Give up on the device after this `duration`.")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: autonode-agent ebs-id [flags] DEVICE\n\n")
		fmt.Fprintf(stderr, "Identifies the NVMe device (NVMe Identify Controller) and prints the EBS volume id and the\n")
		fmt.Fprintf(stderr, "block-device mapping name it was attached under; fails for a device that is not an EBS volume.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("ebs-id: want exactly one DEVICE")
	}
	device := fs.Arg(0)
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	raw, err := id.IdentifyController(ctx, device)
	if err != nil {
		return fmt.Errorf("ebs-id: %w", err)
	}
	c, err := ebs.ParseIdentify(raw)
	if err != nil {
		return fmt.Errorf("ebs-id: %s: %w", device, err)
	}
	volumeID, err := c.VolumeID()
	if err != nil {
		return fmt.Errorf("ebs-id: %s: %w", device, err)
	}
	// A volume without a valid mapping name still gets its volume-id link.
	name, _ := c.DeviceName()
	var out string
	switch *format {
	case "names":
		out = joinNonEmpty(volumeID, name)
	case "links":
		out = joinNonEmpty(path.Join(ebs.ByVolumeIDDir, volumeID), name)
	case "env":
		out = "AUTONODE_EBS_VOLUME_ID=" + volumeID
		if name != "" {
			out += "\nAUTONODE_EBS_DEVICE_NAME=" + name
		}
	default:
		return fmt.Errorf("ebs-id: --format %q: want names, links or env", *format)
	}
	_, err = fmt.Fprintln(stdout, out)
	return err
}

func joinNonEmpty(a, b string) string {
	if b == "" {
		return a
	}
	return a + " " + b
}
