package instancestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// Runner runs the external tools setup needs (blkid, wipefs, mdadm and the
// mkfs programs). It exists because md cannot run on every machine that
// tests this package: tests drive the mdadm path through a fake.
type Runner interface {
	// Run runs the named tool and returns its standard output. A tool that
	// is not installed gives a *MissingToolError; one that exits non-zero
	// gives a *CommandError.
	Run(ctx context.Context, name string, args ...string) ([]byte, error)
}

// toolPackage names the Debian and Bottlerocket package that ships a tool,
// for the error when it is missing.
func toolPackage(tool string) string {
	switch tool {
	case "blkid", "wipefs":
		return "util-linux"
	case "mdadm":
		return "mdadm"
	case "mkfs.xfs":
		return "xfsprogs"
	case "mkfs.ext4":
		return "e2fsprogs"
	case "mkfs.btrfs":
		return "btrfs-progs"
	}
	return "providing " + tool
}

// MissingToolError says that a tool is not installed, and which package
// ships it.
type MissingToolError struct {
	Tool    string
	Package string
	Path    string // the folders searched
}

func (e *MissingToolError) Error() string {
	return fmt.Sprintf("%s is not installed (searched %s): install the %s package", e.Tool, e.Path, e.Package)
}

// CommandError is a tool that exited with an error.
type CommandError struct {
	Name     string
	Args     []string
	ExitCode int // -1 when it did not exit normally
	Stderr   string
	Err      error
}

func (e *CommandError) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if len(msg) > 2000 {
		msg = msg[:2000] + "…"
	}
	if msg == "" {
		msg = "no output"
	}
	return fmt.Sprintf("%s %s: %v: %s", e.Name, strings.Join(e.Args, " "), e.Err, msg)
}

func (e *CommandError) Unwrap() error { return e.Err }

// exitCode returns the exit code of a *CommandError in err, or -1.
func exitCode(err error) int {
	var ce *CommandError
	if errors.As(err, &ce) {
		return ce.ExitCode
	}
	return -1
}

// ExecRunner runs tools as child processes.
type ExecRunner struct {
	// Path lists the folders searched for tools, like $PATH. Empty means
	// /usr/sbin, /sbin, /usr/bin and /bin, where every distribution,
	// Bottlerocket included, installs them.
	Path []string
}

func (r ExecRunner) dirs() []string {
	if len(r.Path) > 0 {
		return r.Path
	}
	return []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"}
}

// lookPath finds name in the runner's folders only, not in $PATH, so that
// which binary formats a disk never depends on the caller's environment.
func (r ExecRunner) lookPath(name string) (string, error) {
	for _, dir := range r.dirs() {
		p := filepath.Join(dir, name)
		if _, err := exec.LookPath(p); err == nil {
			return p, nil
		}
	}
	return "", &MissingToolError{Tool: name, Package: toolPackage(name), Path: strings.Join(r.dirs(), ":")}
}

// Run implements Runner.
func (r ExecRunner) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	path, err := r.lookPath(name)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, path, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// Stdin stays closed: a tool that would ask for confirmation reads EOF
	// and declines rather than hanging the boot.
	if err := cmd.Run(); err != nil {
		code := -1
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		return stdout.Bytes(), &CommandError{Name: name, Args: args, ExitCode: code, Stderr: stderr.String(), Err: err}
	}
	return stdout.Bytes(), nil
}
