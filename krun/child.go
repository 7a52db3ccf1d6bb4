package krun

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"syscall"
	"unicode/utf8"
)

// The VM process is the service's own binary, started again by KrunLauncher
// with childEnv set to "1" and two extra file descriptors:
//
//   - specFD (3): a pipe carrying the Spec as JSON, closed by the parent
//     after writing it.
//   - logFD (4): a pipe on which the VM process writes JSON lines (see
//     childMessage) and libkrun writes its log as plain text lines.
//
// Its stdin, stdout and stderr belong to the guest workload.
const (
	childEnv = "THROWAWAYSH_KRUN_CHILD"
	specFD   = 3
	logFD    = 4

	// maxSpecBytes bounds the spec the VM process reads.
	maxSpecBytes = 64 << 20

	// maxFatalBytes bounds the message in a fatal line, so that the line,
	// even with every byte escaped as \u00XX, stays under maxLogLineBytes
	// and the parent can parse it.
	maxFatalBytes = 1000
)

// ExitChildFailed is the exit status of a VM process that failed before the
// VM started: bad spec, libkrun missing, a libkrun configuration call
// failing. It exists so that such a failure does not look like a clean exit
// to a reader of the status alone. It is 70, EX_SOFTWARE from sysexits.h.
// A guest workload can exit 70 as well, so the parent decides by the fatal
// line on fd 4, not by this status: VM.Wait then returns ErrBootFailed.
const ExitChildFailed = 70

// childMessage is one JSON line the VM process writes on logFD.
type childMessage struct {
	// SpecReceived reports to the parent that the process read the whole
	// spec, which proves it is a VM process and not a second copy of the
	// service.
	SpecReceived bool `json:"spec_received,omitempty"`
	// Fatal is the error that stopped the VM from starting. The process
	// exits right after writing it.
	Fatal string `json:"fatal,omitempty"`
}

// RunChildIfRequested turns the current process into a VM process when
// KrunLauncher started it, and otherwise returns at once. Call it first
// thing in main, and in TestMain of any test that starts a KrunLauncher VM,
// before flags are parsed or servers started: without it, the VM process
// would run a second copy of the program.
//
// In a VM process it never returns. It reads the spec from fd 3, loads
// libkrun and calls krun_start_enter, after which libkrun exits the process
// with the guest workload's status. On any failure before that it writes
// {"fatal":"..."} to fd 4 and exits with ExitChildFailed.
func RunChildIfRequested() {
	if os.Getenv(childEnv) != "1" {
		return
	}
	_ = os.Unsetenv(childEnv)

	messages := os.NewFile(logFD, "vm-log")
	err := bootChild(os.NewFile(specFD, "vm-spec"), messages, logFD, loadVMAPI, confine)
	reportFatal(messages, err)
	os.Exit(ExitChildFailed)
}

func loadVMAPI() (vmAPI, error) { return Load() }

// bootChild reads and checks the spec, loads libkrun through load, moves
// the process into its jail with confine, configures libkrun and starts the
// VM. It returns only on failure.
func bootChild(specIn io.ReadCloser, messages io.Writer, logFD int, load func() (vmAPI, error), confine func(Spec) (Spec, error)) error {
	spec, err := readSpec(specIn)
	_ = specIn.Close()
	if err != nil {
		return err
	}
	if err := writeMessage(messages, childMessage{SpecReceived: true}); err != nil {
		return fmt.Errorf("krun: acknowledge spec: %w", err)
	}
	if err := spec.validate(false); err != nil {
		return err
	}

	api, err := load()
	if err != nil {
		return err
	}
	// krun_start_enter takes over the calling thread for good, and the
	// capabilities that confine drops are the calling thread's.
	runtime.LockOSThread()
	spec, err = confine(spec)
	if err != nil {
		return err
	}
	ctx, err := configureVM(api, spec, logFD)
	if err != nil {
		return err
	}
	if err := api.startVM(ctx); err != nil {
		return fmt.Errorf("krun: start vm: %w", err)
	}
	return errors.New("krun: start vm: krun_start_enter returned without an error")
}

// readSpec reads one JSON-encoded Spec of at most maxSpecBytes.
func readSpec(r io.Reader) (Spec, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxSpecBytes+1))
	if err != nil {
		return Spec{}, fmt.Errorf("krun: read spec: %w", err)
	}
	if len(data) > maxSpecBytes {
		return Spec{}, fmt.Errorf("krun: read spec: over the %d-byte limit", maxSpecBytes)
	}
	var spec Spec
	if err := json.Unmarshal(data, &spec); err != nil {
		return Spec{}, fmt.Errorf("krun: read spec: %w", err)
	}
	return spec, nil
}

func writeMessage(w io.Writer, msg childMessage) error {
	line, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	_, err = w.Write(append(line, '\n'))
	return err
}

// reportFatal writes err as a fatal line. Only when fd 4 is not open, as when
// someone runs a VM process by hand, does it write to stderr instead. Under
// KrunLauncher, stderr belongs to the guest workload and so to the SSH
// client, which must not see host details.
func reportFatal(messages io.Writer, err error) {
	text := err.Error()
	if len(text) > maxFatalBytes {
		cut := maxFatalBytes
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		text = text[:cut] + "..."
	}
	werr := writeMessage(messages, childMessage{Fatal: text})
	if errors.Is(werr, syscall.EBADF) || errors.Is(werr, os.ErrInvalid) {
		fmt.Fprintln(os.Stderr, text)
	}
}
