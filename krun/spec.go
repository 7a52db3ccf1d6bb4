package krun

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/throwawaysh/throwawaysh/internal/sandbox"
)

// Limits that Spec.Validate enforces.
const (
	// MaxCommandLineBytes bounds what Exec, Workdir, Args and Env add to the
	// guest kernel command line, counting each value plus its two quotes and
	// a separator. The x86 kernel command line holds 2048 bytes on older
	// kernels and libkrun adds its own parameters to it, so this is a
	// conservative estimate, not a measured maximum.
	MaxCommandLineBytes = 2048

	// MaxFilesBytes bounds the total size of Spec.Files. The spec travels
	// to the VM process as JSON with Files base64-encoded, and that process
	// reads at most maxSpecBytes of it.
	MaxFilesBytes = 32 << 20

	// MaxCPUs is the largest Spec.CPUs: krun_set_vm_config takes the vCPU
	// count as uint8_t.
	MaxCPUs = 255

	// MinMemoryMiB is the smallest Spec.MemoryMiB accepted. libkrun's guest
	// kernel and init need some memory before the workload starts.
	MinMemoryMiB = 32

	// vsockPathLimit is one more than the longest host unix socket path
	// accepted: sun_path holds 108 bytes on Linux and 104 on macOS, NUL
	// included, and libkrun may build further paths from it.
	vsockPathLimit = 100
)

// Validate checks the spec before anything is started and returns every
// problem found, joined. Each error names the field, the value and the fix.
//
// Zero CPUs, MemoryMiB and Workdir mean their defaults. Exec and a non-empty
// Workdir must be absolute guest paths. Exec, Workdir, Args and Env must
// contain no '"' and no NUL byte, because libkrun passes them on the guest
// kernel command line in double quotes without escaping, and together they
// must fit in MaxCommandLineBytes. Env entries have the form KEY=value.
// Root must be an existing host directory given as an absolute path. Each
// VsockPorts path must be non-empty and under 100 bytes, and each guest port
// may appear once. Files names must be plain names (no '/', no NUL, not "."
// or ".."), and their contents must total at most MaxFilesBytes.
//
// Validate reads the file system to check Root, so its result can change if
// Root is removed afterwards.
func (s Spec) Validate() error {
	return s.validate(true)
}

// validate checks the spec, and Root on the file system when checkRoot is
// set. The VM process does not check Root: the launcher has, and the VM
// process may run as a user that cannot reach it by path.
func (s Spec) validate(checkRoot bool) error {
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("krun: invalid Spec."+format, args...))
	}

	if checkRoot {
		s.validateRoot(add)
	}
	s.validateCommandLine(add)
	s.validateResources(add)
	s.validateVsockPorts(add)
	s.validateFiles(add)
	return errors.Join(errs...)
}

func (s Spec) validateRoot(add func(string, ...any)) {
	if s.Root == "" {
		add("Root: empty; set it to the host directory that becomes the guest's root")
		return
	}
	if !filepath.IsAbs(s.Root) {
		add("Root %s: relative path; use an absolute host path", quoteValue(s.Root))
		return
	}
	info, err := os.Stat(s.Root)
	switch {
	case errors.Is(err, os.ErrNotExist):
		add("Root %s: no such directory; create the VM's root directory first", quoteValue(s.Root))
	case err != nil:
		add("Root %s: %v; make the directory readable by the service", quoteValue(s.Root), err)
	case !info.IsDir():
		add("Root %s: not a directory; point it at the directory holding the guest's root file system", quoteValue(s.Root))
	}
}

// validateCommandLine checks everything that libkrun puts on the guest
// kernel command line.
func (s Spec) validateCommandLine(add func(string, ...any)) {
	total := 0
	check := func(field, value string) {
		total += len(value) + len(`"" `)
		if strings.ContainsRune(value, '"') {
			add("%s %s: contains a double quote, which libkrun cannot pass to the guest; "+
				"put such text in Spec.Files and let the workload read it", field, quoteValue(value))
		}
		if strings.ContainsRune(value, 0) {
			add("%s %s: contains a NUL byte; remove it", field, quoteValue(value))
		}
	}

	switch {
	case s.Exec == "":
		add(`Exec: empty; set the guest path of the workload, for example "/bin/sh"`)
	case !strings.HasPrefix(s.Exec, "/"):
		add(`Exec %s: not an absolute guest path; use one such as "/bin/sh"`, quoteValue(s.Exec))
	}
	check("Exec", s.Exec)

	if s.Workdir != "" && !strings.HasPrefix(s.Workdir, "/") {
		add(`Workdir %s: not an absolute guest path; use one such as "/root", or leave it empty for "/"`, quoteValue(s.Workdir))
	}
	check("Workdir", s.Workdir)

	for i, arg := range s.Args {
		check("Args["+strconv.Itoa(i)+"]", arg)
	}
	for i, kv := range s.Env {
		field := "Env[" + strconv.Itoa(i) + "]"
		if key, _, ok := strings.Cut(kv, "="); !ok || key == "" {
			add("%s %s: not of the form KEY=value; write it as KEY=value", field, quoteValue(kv))
		}
		check(field, kv)
	}

	if total > MaxCommandLineBytes {
		add("Exec, Workdir, Args and Env: %d bytes on the guest kernel command line, over the %d-byte limit; "+
			"move long values into Spec.Files", total, MaxCommandLineBytes)
	}
}

func (s Spec) validateResources(add func(string, ...any)) {
	if s.CPUs < 0 || s.CPUs > MaxCPUs {
		add("CPUs %d: must be between 1 and %d, or 0 for %d", s.CPUs, MaxCPUs, DefaultCPUs)
	}
	if s.MemoryMiB != 0 && (s.MemoryMiB < MinMemoryMiB || int64(s.MemoryMiB) > math.MaxUint32) {
		add("MemoryMiB %d: must be between %d and %d MiB, or 0 for %d",
			s.MemoryMiB, MinMemoryMiB, uint64(math.MaxUint32), DefaultMemoryMiB)
	}
	if s.DiskMiB != 0 && (s.DiskMiB < sandbox.MinDiskMiB || s.DiskMiB > sandbox.MaxDiskMiB) {
		add("DiskMiB %d: must be between %d and %d MiB, or 0 for %d",
			s.DiskMiB, sandbox.MinDiskMiB, sandbox.MaxDiskMiB, DefaultDiskMiB)
	}
}

func (s Spec) validateVsockPorts(add func(string, ...any)) {
	seen := make(map[uint32]int, len(s.VsockPorts))
	for i, vp := range s.VsockPorts {
		field := "VsockPorts[" + strconv.Itoa(i) + "]"
		if first, ok := seen[vp.Port]; ok {
			add("%s.Port %d: already mapped by VsockPorts[%d]; map each guest port once", field, vp.Port, first)
		} else {
			seen[vp.Port] = i
		}
		switch {
		case vp.Path == "":
			add("%s.Path: empty; set the host unix socket the guest port connects to", field)
		case len(vp.Path) >= vsockPathLimit:
			add("%s.Path %s: %d bytes, but unix socket paths must be under %d bytes; use a shorter directory",
				field, quoteValue(vp.Path), len(vp.Path), vsockPathLimit)
		case strings.ContainsRune(vp.Path, 0):
			add("%s.Path %s: contains a NUL byte; remove it", field, quoteValue(vp.Path))
		}
	}
}

func (s Spec) validateFiles(add func(string, ...any)) {
	total := 0
	for _, name := range slices.Sorted(maps.Keys(s.Files)) {
		total += len(s.Files[name])
		if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
			add("Files name %s: must be a plain file name without '/' or NUL, not \".\" or \"..\"; "+
				"the file appears in the guest as \"/\" + name", quoteValue(name))
		}
	}
	if total > MaxFilesBytes {
		add("Files: %d bytes in total, over the %d-byte limit; send large data another way, for example over vsock",
			total, MaxFilesBytes)
	}
}

// withDefaults returns the spec with zero CPUs, MemoryMiB and Workdir
// replaced by their defaults.
func (s Spec) withDefaults() Spec {
	if s.CPUs == 0 {
		s.CPUs = DefaultCPUs
	}
	if s.MemoryMiB == 0 {
		s.MemoryMiB = DefaultMemoryMiB
	}
	if s.DiskMiB == 0 {
		s.DiskMiB = DefaultDiskMiB
	}
	if s.Workdir == "" {
		s.Workdir = "/"
	}
	return s
}

// quoteValue quotes v for an error message, shortened to keep messages
// readable when a value is long or hostile.
func quoteValue(v string) string {
	const maxShown = 80
	if len(v) <= maxShown {
		return strconv.Quote(v)
	}
	cut := maxShown
	for cut > 0 && !utf8.RuneStart(v[cut]) {
		cut--
	}
	return strconv.Quote(v[:cut]) + fmt.Sprintf("... (%d bytes)", len(v))
}
