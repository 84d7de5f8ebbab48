package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/autonode/autonode/agent/config"
	"github.com/autonode/autonode/agent/storage/instancestore"
	"github.com/autonode/autonode/agent/subsystem"
	"github.com/autonode/autonode/health"
)

// storageCmd is `autonode-agent storage setup|verify`: setup prepares the
// instance store once per boot, before containerd and the kubelet
// (autonode-storage-setup.service); verify checks it and exits non-zero when
// it is not in place.
func storageCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	usage := func() {
		fmt.Fprintf(stderr, "Usage: autonode-agent storage setup|verify [flags]\n\n")
		fmt.Fprintf(stderr, "setup   prepares the instance-store disks: RAID0, filesystem, mount, binds (docs/storage.md);\n")
		fmt.Fprintf(stderr, "        run once per boot, before containerd and the kubelet\n")
		fmt.Fprintf(stderr, "verify  checks that they are in place, changing nothing; exits 1 when they are not\n\n")
		fmt.Fprintf(stderr, "Flags override the config file's storage.instanceStore section. --force is setup's only.\n\nFlags:\n")
	}
	verb := ""
	if len(args) > 0 {
		verb = args[0]
	}
	switch verb {
	case "setup", "verify":
	case "-h", "-help", "--help", "help":
		usage()
		fs, _ := storageFlags("setup", stderr)
		fs.PrintDefaults()
		return config.ErrHelp
	case "":
		usage()
		return errors.New("storage: want setup or verify")
	default:
		usage()
		return fmt.Errorf("storage: unknown command %q (want setup or verify)", verb)
	}
	fs, f := storageFlags(verb, stderr)
	fs.Usage = func() { usage(); fs.PrintDefaults() }
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("storage %s: unexpected arguments: %s", verb, strings.Join(fs.Args(), " "))
	}
	cfg := config.Default()
	if f.config != "" {
		if err := cfg.LoadFile(f.config); err != nil {
			return fmt.Errorf("storage %s: %w", verb, err)
		}
	}
	is := &cfg.Storage.InstanceStore
	if len(f.devices) > 0 {
		is.Devices = f.devices
	}
	if len(f.binds) > 0 {
		is.Binds = nil
		for _, b := range f.binds {
			bind, err := config.ParseInstanceStoreBind(b)
			if err != nil {
				return fmt.Errorf("storage %s: --bind: %w", verb, err)
			}
			is.Binds = append(is.Binds, bind)
		}
	}
	if len(f.markers) > 0 {
		is.KubeletMarkers = f.markers
	}
	for _, f := range []struct {
		dst *string
		v   string
	}{{&is.Filesystem, f.filesystem}, {&is.MountPoint, f.mountPoint}, {&is.StatePath, f.statePath}, {&is.SysfsRoot, f.sysfsRoot}} {
		if f.v != "" {
			*f.dst = f.v
		}
	}
	// Only this section: the kubeconfig and the like may not exist yet.
	if err := cfg.ValidateInstanceStore(); err != nil {
		return fmt.Errorf("storage %s: invalid configuration:\n%w", verb, err)
	}
	if !is.Enabled {
		_, err := fmt.Fprintln(stdout, "instance store: disabled by storage.instanceStore.enabled")
		return err
	}

	logger := slog.New(slog.NewTextHandler(stderr, nil))
	opts := instanceStoreOptions(*is, logger)
	opts.Force = f.force
	if verb == "verify" {
		res, err := instancestore.Verify(ctx, opts)
		if err != nil {
			return fmt.Errorf("storage verify: %w", err)
		}
		if res.Layout == instancestore.LayoutNone {
			_, err = fmt.Fprintln(stdout, "instance store: none on this node")
			return err
		}
		_, err = fmt.Fprintf(stdout, "instance store: in place (%s of %s: %s on %s, mounted at %s)\n",
			res.Layout, strings.Join(res.Devices, ", "), res.Filesystem, res.Target, opts.MountPoint)
		return err
	}
	rep, err := instancestore.Setup(ctx, opts)
	if err != nil {
		return fmt.Errorf("storage setup: %w", err)
	}
	if rep.Layout == instancestore.LayoutNone {
		fmt.Fprintln(stdout, "instance store: none on this node; nothing to do")
	} else {
		fmt.Fprintf(stdout, "instance store: %s (%s of %s: %s on %s, mounted at %s)\n",
			rep.Action, rep.Layout, strings.Join(rep.Devices, ", "), rep.Filesystem, rep.Target, opts.MountPoint)
	}
	for _, n := range rep.Notes {
		fmt.Fprintln(stdout, "note:", n)
	}
	return nil
}

// storageFlagValues are the flags of `storage setup` and `storage verify`.
type storageFlagValues struct {
	config, filesystem, mountPoint, statePath, sysfsRoot string
	devices, binds, markers                              listFlag
	force                                                bool
}

func storageFlags(verb string, stderr io.Writer) (*flag.FlagSet, *storageFlagValues) {
	v := &storageFlagValues{}
	fs := flag.NewFlagSet("autonode-agent storage "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&v.config, "config", "", "Agent config `file` whose storage.instanceStore section applies (see docs/configuration.md).")
	fs.Var(&v.devices, "device", "Instance-store `disk` to use instead of discovering them; repeat for each.")
	fs.Var(&v.binds, "bind", "Folder to bind from the instance store, as `PATH[:rshared]`; repeat for each; replaces the configured list.")
	fs.Var(&v.markers, "kubelet-marker", "A `path` whose existence means the kubelet has started, so setup only verifies; repeat for each.")
	fs.StringVar(&v.filesystem, "filesystem", "", "Filesystem `type`: xfs, ext4 (over mdadm RAID0 for 2+ disks) or btrfs (its own RAID0).")
	fs.StringVar(&v.mountPoint, "mount-point", "", "Where the instance store is mounted (`path`).")
	fs.StringVar(&v.statePath, "state-file", "", "State file `path` recording what setup did.")
	fs.StringVar(&v.sysfsRoot, "sysfs-root", "", "Where sysfs is mounted (`path`), for discovering the disks.")
	if verb == "setup" {
		fs.BoolVar(&v.force, "force", false, "Format disks that hold a foreign filesystem or partition table. Destroys their data.")
	}
	return fs, v
}

// instanceStoreOptions turns the configuration into the package's options.
func instanceStoreOptions(is config.InstanceStore, logger *slog.Logger) instancestore.Options {
	opts := instancestore.Options{
		Devices:        is.Devices,
		SysfsRoot:      is.SysfsRoot,
		Filesystem:     is.Filesystem,
		RAIDChunkKiB:   is.RAIDChunkKiB,
		MountPoint:     is.MountPoint,
		StatePath:      is.StatePath,
		KubeletMarkers: is.KubeletMarkers,
		KubeletProcess: is.KubeletProcess,
		Logger:         logger,
	}
	if opts.KubeletProcess == "-" {
		opts.KubeletProcess = ""
	}
	for _, b := range is.Binds {
		opts.Binds = append(opts.Binds, instancestore.Bind{Path: b.Path, Shared: b.Propagation == "rshared"})
	}
	return opts
}

// instanceStoreVerifier is the daemon's instance-store subsystem: it only
// verifies what `storage setup` did, since the kubelet is running by now.
// It is off when the instance store is disabled.
func instanceStoreVerifier(cfg config.Config, logger *slog.Logger, reporter health.Reporter) []subsystem.Spec {
	is := cfg.Storage.InstanceStore
	if !is.Enabled {
		return nil
	}
	v := instancestore.NewVerifier(instanceStoreOptions(is, logger), is.VerifyInterval.Duration, reporter)
	return []subsystem.Spec{{Subsystem: v, Condition: health.StorageReady}}
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }
