package ebs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// ErrVolumeNotFound says no attached NVMe device identifies as the volume.
var ErrVolumeNotFound = errors.New("EBS volume not attached")

// MismatchError says a device identifies as another volume than expected:
// the device was detached and its kernel name reused.
type MismatchError struct {
	Device string // the device that was checked
	Want   string // the volume id expected there
	Got    string // the volume id it holds; empty when it is no EBS volume
}

func (e *MismatchError) Error() string {
	if e.Got == "" {
		return fmt.Sprintf("device %s is not EBS volume %s: it holds no EBS volume", e.Device, e.Want)
	}
	return fmt.Sprintf("device %s is not EBS volume %s: it holds %s", e.Device, e.Want, e.Got)
}

// Identifier reads the Identify Controller data of a device. NVMe does it
// with the admin-command ioctl; tests feed byte fixtures.
type Identifier interface {
	IdentifyController(ctx context.Context, devicePath string) ([]byte, error)
}

// Volume is one attached EBS volume.
type Volume struct {
	// ID is the volume id, "vol-0abc…".
	ID string
	// Device is the namespace device, <dev root>/nvmeNn1.
	Device string
	// DeviceName is the block-device mapping name ("xvdba", "sdf"), or
	// empty when the volume carries no valid one.
	DeviceName string
}

// LocatorOptions configures a Locator.
type LocatorOptions struct {
	// DevRoot is the /dev tree holding the nvmeNn1 devices and the links.
	// Default is "/dev".
	DevRoot string
	// Identifier reads Identify Controller data. Default is NVMe{}.
	Identifier Identifier
	// SyncInterval is how often Run checks and repairs every link.
	// Default is 1 minute.
	SyncInterval time.Duration
	// Logger receives link repairs and unreadable devices. Default discards.
	Logger *slog.Logger
}

// Locator finds EBS volumes by id and keeps their stable links. Every link
// it follows is checked first: its target is identified again and must hold
// the volume the link names (the serial check the EBS CSI driver added after
// a stale /dev/disk/by-id link mounted another volume, aws-ebs-csi-driver
// #1224). A stale link is removed or repaired, never trusted.
//
// The agent runs a Locator's Run; the CSI node service calls Locate and
// Verify. All methods are safe for concurrent use.
type Locator struct {
	links    links
	identify Identifier
	interval time.Duration
	log      *slog.Logger
	// mu serializes link changes, so a Sync never removes a link that a
	// Locate is creating.
	mu sync.Mutex

	stateMu sync.Mutex
	synced  bool  // Run has synced at least once
	syncErr error // the last sync's error
}

// NewLocator returns a Locator over opts.DevRoot.
func NewLocator(opts LocatorOptions) *Locator {
	if opts.DevRoot == "" {
		opts.DevRoot = "/dev"
	}
	if opts.Identifier == nil {
		opts.Identifier = NVMe{}
	}
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Locator{
		links:    links{devRoot: filepath.Clean(opts.DevRoot)},
		identify: opts.Identifier,
		interval: opts.SyncInterval,
		log:      opts.Logger,
	}
}

// Locate returns the namespace device (<dev root>/nvmeNn1) of the attached
// EBS volume volumeID, after identifying it. It follows the volume's link
// when the device there still holds the volume, and otherwise scans every
// NVMe device, removing the stale link and writing the right ones. The error
// wraps ErrVolumeNotFound when no device holds the volume.
func (l *Locator) Locate(ctx context.Context, volumeID string) (string, error) {
	if !ValidVolumeID(volumeID) {
		return "", fmt.Errorf("locating %q: not an EBS volume id (vol- and 8 or 17 hex digits)", volumeID)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	link := l.links.byVolumeID(volumeID)
	target, raw, err := l.links.resolve(link)
	var stale error
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		// Not a symlink (EINVAL) or unreadable: never follow it.
		stale = fmt.Errorf("link %s: %w", link, err)
	case !l.links.isNamespace(target):
		// A partition would pass the serial check too; only ever hand out
		// a whole namespace from this tree.
		stale = fmt.Errorf("link %s points at %s, not at an NVMe namespace under %s", link, target, l.links.devRoot)
		l.log.Warn("EBS volume link points outside the NVMe namespaces, removing it", "volume", volumeID, "link", link, "target", target)
		if err := l.links.removeIf(link, raw); err != nil {
			return "", fmt.Errorf("locating %s: %w", volumeID, err)
		}
	default:
		verr := l.Verify(ctx, volumeID, target)
		if verr == nil {
			return target, nil
		}
		if ctx.Err() != nil {
			return "", fmt.Errorf("locating %s: %w", volumeID, verr)
		}
		stale = fmt.Errorf("link %s pointed at %s: %w", link, target, verr)
		l.log.Warn("stale EBS volume link, removing it", "volume", volumeID, "link", link, "target", target, "err", verr)
		if err := l.links.removeIf(link, raw); err != nil {
			return "", fmt.Errorf("locating %s: %w", volumeID, err)
		}
	}
	vols, err := l.Volumes(ctx)
	if err != nil {
		return "", fmt.Errorf("locating %s: %w", volumeID, err)
	}
	var found []Volume
	for _, v := range vols {
		if v.ID == volumeID {
			found = append(found, v)
		}
	}
	switch len(found) {
	case 0:
		if stale != nil {
			return "", fmt.Errorf("locating %s among %d EBS volumes under %s: %w (%w)", volumeID, len(vols), l.links.devRoot, ErrVolumeNotFound, stale)
		}
		return "", fmt.Errorf("locating %s among %d EBS volumes under %s: %w", volumeID, len(vols), l.links.devRoot, ErrVolumeNotFound)
	case 1:
	default:
		return "", fmt.Errorf("locating %s: %s and %s both identify as it; refusing to choose", volumeID, found[0].Device, found[1].Device)
	}
	if err := l.ensureLinks(found[0]); err != nil {
		// The device is identified; a link we could not write does not
		// make it less so.
		l.log.Error("writing EBS volume links", "volume", volumeID, "device", found[0].Device, "err", err)
	}
	return found[0].Device, nil
}

// Verify identifies devicePath and checks that it holds volumeID. Call it
// again right before acting on a device found earlier (formatting it,
// mounting it): a detach and reattach can reuse the name in between. The
// error is a *MismatchError when the device holds something else.
func (l *Locator) Verify(ctx context.Context, volumeID, devicePath string) error {
	c, err := l.identifyDevice(ctx, devicePath)
	if err != nil {
		return err
	}
	got, err := c.VolumeID()
	if errors.Is(err, ErrNotEBS) {
		return &MismatchError{Device: devicePath, Want: volumeID}
	}
	if err != nil {
		return fmt.Errorf("device %s: %w", devicePath, err)
	}
	if got != volumeID {
		return &MismatchError{Device: devicePath, Want: volumeID, Got: got}
	}
	return nil
}

// Volumes identifies every NVMe namespace device and returns the EBS
// volumes, sorted by device. Devices that cannot be identified (gone since
// the listing, not NVMe, garbled data) are logged and left out.
func (l *Locator) Volumes(ctx context.Context) ([]Volume, error) {
	devices, err := l.links.namespaces()
	if err != nil {
		return nil, err
	}
	var vols []Volume
	for _, dev := range devices {
		c, err := l.identifyDevice(ctx, dev)
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			l.log.Debug("skipping unidentifiable NVMe device", "device", dev, "err", err)
			continue
		}
		if !c.IsEBS() {
			continue
		}
		id, err := c.VolumeID()
		if err != nil {
			l.log.Warn("skipping EBS device with a malformed serial", "device", dev, "err", err)
			continue
		}
		v := Volume{ID: id, Device: dev}
		if name, err := c.DeviceName(); err == nil {
			v.DeviceName = name
		} else {
			l.log.Debug("EBS volume without a device name", "volume", id, "device", dev, "err", err)
		}
		vols = append(vols, v)
	}
	slices.SortFunc(vols, func(a, b Volume) int { return strings.Compare(a.Device, b.Device) })
	return vols, nil
}

// Sync writes the links of every attached EBS volume and removes the links
// (ours under by-volume-id, and mapping-name links pointing at an NVMe
// namespace) whose target no longer holds what the link names.
func (l *Locator) Sync(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	vols, err := l.Volumes(ctx)
	if err != nil {
		return fmt.Errorf("syncing EBS volume links: %w", err)
	}
	var errs []error
	byDevice := map[string]Volume{}
	for _, v := range vols {
		byDevice[v.Device] = v
		errs = append(errs, l.ensureLinks(v))
	}
	errs = append(errs, l.sweepByVolumeID(byDevice), l.sweepByName(byDevice))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("syncing EBS volume links: %w", err)
	}
	return nil
}

// Name implements the agent's subsystem interface.
func (l *Locator) Name() string { return "ebs-links" }

// Run syncs the links now and then every SyncInterval until ctx ends. The
// udev rule (docs/storage.md) names volumes as they attach; Run repairs what
// udev missed or never ran for. A failed sync is logged and shown by Ready,
// and retried at the next tick: it never stops Run, since Locate and Verify
// check every link anyway.
func (l *Locator) Run(ctx context.Context) error {
	t := time.NewTicker(l.interval)
	defer t.Stop()
	for {
		err := l.Sync(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			l.log.Error("EBS volume links", "err", err)
		}
		l.stateMu.Lock()
		l.synced, l.syncErr = true, err
		l.stateMu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Ready reports nil once Run has synced every link, or the error of its
// last sync.
func (l *Locator) Ready() error {
	l.stateMu.Lock()
	defer l.stateMu.Unlock()
	switch {
	case !l.synced:
		return errors.New("EBS volume links not synced yet")
	case l.syncErr != nil:
		return l.syncErr
	}
	return nil
}

func (l *Locator) identifyDevice(ctx context.Context, devicePath string) (Controller, error) {
	b, err := l.identify.IdentifyController(ctx, devicePath)
	if err != nil {
		return Controller{}, fmt.Errorf("identifying %s: %w", devicePath, err)
	}
	c, err := ParseIdentify(b)
	if err != nil {
		return Controller{}, fmt.Errorf("identifying %s: %w", devicePath, err)
	}
	return c, nil
}

func (l *Locator) ensureLinks(v Volume) error {
	names := []string{l.links.byVolumeID(v.ID)}
	if v.DeviceName != "" {
		names = append(names, l.links.byName(v.DeviceName))
	}
	var errs []error
	for _, link := range names {
		changed, err := l.links.ensure(link, v.Device)
		if err != nil {
			errs = append(errs, err)
		} else if changed {
			l.log.Info("EBS volume link written", "volume", v.ID, "link", link, "device", v.Device)
		}
	}
	return errors.Join(errs...)
}

// sweepByVolumeID removes volume-id links whose target holds another volume
// or none, and temporary links a crash left behind.
func (l *Locator) sweepByVolumeID(byDevice map[string]Volume) error {
	dir := filepath.Join(l.links.devRoot, ByVolumeIDDir)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing %s: %w", dir, err)
	}
	var errs []error
	for _, e := range entries {
		// Other names (the partition links the udev rule writes) are
		// udev's to manage.
		if e.Type()&fs.ModeSymlink == 0 || !(ValidVolumeID(e.Name()) || isTmpLink(e.Name())) {
			continue
		}
		link := filepath.Join(dir, e.Name())
		target, raw, err := l.links.resolve(link)
		if err != nil {
			continue // gone meanwhile
		}
		if !isTmpLink(e.Name()) && byDevice[target].ID == e.Name() {
			continue
		}
		l.log.Warn("removing stale EBS volume link", "link", link, "target", target)
		errs = append(errs, l.links.removeIf(link, raw))
	}
	return errors.Join(errs...)
}

// sweepByName removes mapping-name links (/dev/xvdba) that point at an NVMe
// namespace whose volume carries another name. Links pointing elsewhere are
// not ours and stay.
func (l *Locator) sweepByName(byDevice map[string]Volume) error {
	entries, err := os.ReadDir(l.links.devRoot)
	if err != nil {
		return fmt.Errorf("listing %s: %w", l.links.devRoot, err)
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if e.Type()&fs.ModeSymlink == 0 || !(deviceName.MatchString(name) || isTmpLink(name)) {
			continue
		}
		link := filepath.Join(l.links.devRoot, name)
		target, raw, err := l.links.resolve(link)
		if err != nil || !l.links.isNamespace(target) {
			continue
		}
		if !isTmpLink(name) && byDevice[target].DeviceName == name {
			continue
		}
		l.log.Warn("removing stale EBS device-name link", "link", link, "target", target)
		errs = append(errs, l.links.removeIf(link, raw))
	}
	return errors.Join(errs...)
}
