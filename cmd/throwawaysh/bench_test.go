package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/throwawaysh/throwawaysh/krun"
)

// benchDocEnv names the file that BenchmarkCompareWithSSHD writes its
// markdown report into, between benchDocStart and benchDocEnd when the
// file has them. Unset, the report goes to stdout only.
const benchDocEnv = "THROWAWAYSH_BENCH_DOC"

// benchCommandEnv is the command line recorded in the report as the one
// that produced it; make bench sets it.
const benchCommandEnv = "THROWAWAYSH_BENCH_COMMAND"

const (
	benchDocStart = "<!-- bench:start -->"
	benchDocEnd   = "<!-- bench:end -->"
)

// benchWatchdog bounds a whole run of BenchmarkCompareWithSSHD, which
// takes about two minutes on an idle machine with 2 cores.
const benchWatchdog = 30 * time.Minute

// benchKex is the key exchange of every benchmark connection.
const benchKex = "curve25519-sha256"

// benchParams sizes one benchmark run.
type benchParams struct {
	// runs is the number of samples of each latency figure.
	runs int
	// rounds is the number of samples of each rate, throughput and
	// memory figure.
	rounds int
	// clients are the numbers of concurrent clients for sessions/s.
	clients []int
	// window is how long the clients start sessions in one round of
	// sessions/s.
	window time.Duration
	// transferBytes is the size of each throughput transfer.
	transferBytes int64
	// idleSessions is how many idle sessions the memory figure holds.
	idleSessions int
}

// fullBench are the sizes docs/benchmarks.md reports: 256 MiB transfers, 1, 8 and
// 32 clients, 32 idle sessions.
var fullBench = benchParams{
	runs:          20,
	rounds:        3,
	clients:       []int{1, 8, 32},
	window:        3 * time.Second,
	transferBytes: 256 << 20,
	idleSessions:  32,
}

// tinyBench runs every figure once, small, to check the harness.
var tinyBench = benchParams{
	runs:          1,
	rounds:        1,
	clients:       []int{1, 2},
	window:        200 * time.Millisecond,
	transferBytes: 1 << 20,
	idleSessions:  2,
}

// figure is one measured quantity, with a sample per run or round and
// target.
type figure struct {
	name string
	unit string
	// higherIsBetter is true for rates, false for times and memory.
	higherIsBetter bool
	// timeFigure marks figures for which the VM's share of the time is
	// reported.
	timeFigure bool
	samples    map[string][]float64
	failures   map[string]int
}

func newFigure(name, unit string, higherIsBetter, timeFigure bool) *figure {
	return &figure{name: name, unit: unit, higherIsBetter: higherIsBetter, timeFigure: timeFigure,
		samples: map[string][]float64{}, failures: map[string]int{}}
}

// stats returns the median, minimum and maximum of samples.
func stats(samples []float64) (median, low, high float64) {
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	n := len(sorted)
	median = sorted[n/2]
	if n%2 == 0 {
		median = (sorted[n/2-1] + sorted[n/2]) / 2
	}
	return median, sorted[0], sorted[n-1]
}

// benchRun measures every figure on each target with the OpenSSH client.
type benchRun struct {
	params  benchParams
	key     benchKey
	targets []*benchTarget
	// skipped maps a target that did not run to the reason.
	skipped map[string]string
	figures []*figure

	// loadBefore is the load average when the run started.
	loadBefore string

	transferOnce sync.Once
	transferPath string
	transferErr  error
}

// sshArgs returns the OpenSSH client arguments for target, ending with the
// host; extra options come before it.
func (r *benchRun) sshArgs(target *benchTarget, extra ...string) []string {
	args := []string{
		"-F", "/dev/null",
		"-p", target.port,
		"-l", target.user,
		"-i", r.key.privatePath,
		"-o", "IdentitiesOnly=yes",
		"-o", "BatchMode=yes",
		"-o", "PreferredAuthentications=publickey",
		"-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null",
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "LogLevel=ERROR",
		"-o", "ConnectTimeout=10",
		"-o", "ControlMaster=no",
		"-o", "ControlPath=none",
		// OpenSSH 9.x prefers sntrup761x25519-sha512, which
		// x/crypto/ssh lacks, so the default key exchange would
		// differ between the targets.
		"-o", "KexAlgorithms=" + benchKex,
	}
	args = append(args, extra...)
	return append(args, "127.0.0.1")
}

// sshCommand returns the OpenSSH client command that runs remote on target.
func (r *benchRun) sshCommand(target *benchTarget, options []string, remote ...string) *exec.Cmd {
	cmd := exec.Command("ssh", append(r.sshArgs(target, options...), remote...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + r.key.home}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// runTrue runs `ssh host true` and returns its wall time, from starting
// the client to its exit with the remote exit status.
func (r *benchRun) runTrue(target *benchTarget) (time.Duration, error) {
	cmd := r.sshCommand(target, nil, "true")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	elapsed := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("ssh true: %v: %s", err, firstLine(stderr.String()))
	}
	return elapsed, nil
}

// firstPTYByte starts a PTY session that runs an interactive sh and
// returns the time from starting the client to the first byte of output,
// the prompt, then ends the shell. It runs sh rather than the login shell
// because a login shell on the sshd side reads the user's profile, whose
// cost belongs to neither server.
func (r *benchRun) firstPTYByte(target *benchTarget) (time.Duration, error) {
	cmd := r.sshCommand(target, []string{"-tt"}, "sh")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 0, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	first := make([]byte, 1)
	_, readErr := io.ReadFull(stdout, first)
	elapsed := time.Since(start)

	_, _ = io.WriteString(stdin, "exit\n")
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-waited
	}
	if readErr != nil {
		return 0, fmt.Errorf("no PTY output: %v: %s", readErr, firstLine(stderr.String()))
	}
	return elapsed, nil
}

// sessionRate runs clients concurrent loops of `ssh host true` for the
// window and returns completed sessions per second, counted until the last
// session ended, and the number of failed sessions.
func (r *benchRun) sessionRate(target *benchTarget, clients int) (float64, int) {
	var completed, failed atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	stop := start.Add(r.params.window)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for time.Now().Before(stop) {
				if _, err := r.runTrue(target); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				completed.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	return float64(completed.Load()) / elapsed.Seconds(), int(failed.Load())
}

// transferFile returns a file of transferBytes random bytes, written on
// first use, which uploads read. Random bytes keep any compression from
// helping.
func (r *benchRun) transferFile() (string, error) {
	r.transferOnce.Do(func() {
		r.transferPath = filepath.Join(r.key.home, "transfer")
		file, err := os.Create(r.transferPath)
		if err != nil {
			r.transferErr = err
			return
		}
		_, err = io.CopyN(file, rand.Reader, r.params.transferBytes)
		if closeErr := file.Close(); err == nil {
			err = closeErr
		}
		r.transferErr = err
	})
	return r.transferPath, r.transferErr
}

// transferCommand returns the ssh command that runs program on target,
// with cipher when it is not empty.
func (r *benchRun) transferCommand(target *benchTarget, cipher, program string) *exec.Cmd {
	if cipher == "" {
		return r.sshCommand(target, nil, target.programs+program)
	}
	server := *target
	server.port = target.chachaPort
	return r.sshCommand(&server, []string{"-c", cipher}, target.programs+program)
}

// upload sends transferBytes through `cat > /dev/null`, with cipher when
// it is not empty, and returns the rate in MiB/s over the client's whole
// run. The client reads the data from a file, so that the benchmark
// process, which holds the throwawaysh server, does none of the transfer.
func (r *benchRun) upload(target *benchTarget, cipher string) (float64, error) {
	path, err := r.transferFile()
	if err != nil {
		return 0, fmt.Errorf("upload data: %w", err)
	}
	data, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer data.Close()
	cmd := r.transferCommand(target, cipher, "cat > /dev/null")
	cmd.Stdin = data
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err = cmd.Run()
	elapsed := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("upload: %v: %s", err, firstLine(stderr.String()))
	}
	return mibPerSecond(r.params.transferBytes, elapsed), nil
}

// download reads transferBytes from `head -c N /dev/zero`, with cipher
// when it is not empty, and returns the rate in MiB/s over the client's
// whole run. The client's output goes to `wc -c`, for the same reason
// upload reads a file.
func (r *benchRun) download(target *benchTarget, cipher string) (float64, error) {
	cmd := r.transferCommand(target, cipher, "head -c "+strconv.FormatInt(r.params.transferBytes, 10)+" /dev/zero")
	counter := exec.Command("wc", "-c")
	read, write, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	counter.Stdin, cmd.Stdout = read, write
	var counted, stderr bytes.Buffer
	counter.Stdout, cmd.Stderr = &counted, &stderr
	start := time.Now()
	err = counter.Start()
	if err == nil {
		err = cmd.Start()
		if err != nil {
			_ = counter.Process.Kill()
		}
	}
	// Each child has its own copy now, so wc reads end of file once ssh
	// exits.
	_ = read.Close()
	_ = write.Close()
	if err != nil {
		_ = counter.Wait()
		return 0, err
	}
	err = cmd.Wait()
	elapsed := time.Since(start)
	countErr := counter.Wait()
	if err != nil || countErr != nil {
		return 0, fmt.Errorf("download: %v, wc: %v: %s", err, countErr, firstLine(stderr.String()))
	}
	received, err := strconv.ParseInt(strings.TrimSpace(counted.String()), 10, 64)
	if err != nil || received != r.params.transferBytes {
		return 0, fmt.Errorf("download: wc counted %q bytes, want %d", strings.TrimSpace(counted.String()), r.params.transferBytes)
	}
	return mibPerSecond(received, elapsed), nil
}

func mibPerSecond(bytes int64, elapsed time.Duration) float64 {
	return float64(bytes) / (1 << 20) / elapsed.Seconds()
}

// idleMemory opens idleSessions sessions that sleep, and returns the
// growth of the server's resident memory per session in KiB, and of the
// VM processes' in MiB where the target has real VMs (else -1).
func (r *benchRun) idleMemory(target *benchTarget) (serverKiB, vmMiB float64, err error) {
	if err := target.idle(time.Now().Add(10 * time.Second)); err != nil {
		return 0, 0, fmt.Errorf("before idle sessions: %w", err)
	}
	baseline, err := target.serverMemory()
	if err != nil {
		return 0, 0, err
	}
	var vmBaseline int64
	if target.vmMemory != nil {
		if vmBaseline, err = target.vmMemory(); err != nil {
			return 0, 0, err
		}
	}

	var clients []*idleSession
	defer func() {
		for _, client := range clients {
			client.end()
		}
		if idleErr := target.idle(time.Now().Add(10 * time.Second)); idleErr != nil && err == nil {
			err = fmt.Errorf("after idle sessions: %w", idleErr)
		}
	}()
	for range r.params.idleSessions {
		client, err := r.startIdleSession(target)
		if err != nil {
			return 0, 0, err
		}
		clients = append(clients, client)
	}

	loaded, err := target.serverMemory()
	if err != nil {
		return 0, 0, err
	}
	n := float64(r.params.idleSessions)
	serverKiB = float64(loaded-baseline) / 1024 / n
	vmMiB = -1
	if target.vmMemory != nil {
		vmLoaded, err := target.vmMemory()
		if err != nil {
			return 0, 0, err
		}
		vmMiB = float64(vmLoaded-vmBaseline) / (1 << 20) / n
	}
	return serverKiB, vmMiB, nil
}

// idleSession is an OpenSSH client whose remote command waits for the
// end of its input.
type idleSession struct {
	cmd *exec.Cmd
	// input is the write end of the client's stdin.
	input *os.File
}

// end closes the session's input, which ends the remote cat and so the
// session, and waits for the client. sshd leaves a command without a PTY
// running when its client is killed, so ending the input is what stops
// the command on that side.
func (s *idleSession) end() {
	_ = s.input.Close()
	waited := make(chan struct{})
	go func() {
		_ = s.cmd.Wait()
		close(waited)
	}()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-waited
	}
}

// startIdleSession starts a session whose command prints a line and then
// waits in cat for the end of its input, and returns once the line
// arrived. The client's stdin and stdout are pipes of this process, so no
// goroutine of this process serves the session while it is idle.
func (r *benchRun) startIdleSession(target *benchTarget) (*idleSession, error) {
	inputReader, inputWriter, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer inputReader.Close()
	outputReader, outputWriter, err := os.Pipe()
	if err != nil {
		_ = inputWriter.Close()
		return nil, err
	}
	defer outputReader.Close()
	cmd := r.sshCommand(target, nil, "echo ready; exec cat > /dev/null")
	cmd.Stdin, cmd.Stdout = inputReader, outputWriter
	err = cmd.Start()
	_ = outputWriter.Close()
	if err != nil {
		_ = inputWriter.Close()
		return nil, err
	}
	session := &idleSession{cmd: cmd, input: inputWriter}
	_ = outputReader.SetReadDeadline(time.Now().Add(30 * time.Second))
	line, err := bufio.NewReader(outputReader).ReadString('\n')
	if err != nil || line != "ready\n" {
		session.end()
		return nil, fmt.Errorf("idle session: first line %q, err %v", line, err)
	}
	return session, nil
}

// measure runs every figure on every target, one target after the other,
// so that their load never overlaps.
func (r *benchRun) measure(logf func(format string, args ...any)) {
	connect := newFigure("`ssh host true`, client start to exit status", "ms", false, true)
	pty := newFigure("PTY session running sh, client start to first output byte", "ms", false, true)
	rates := map[int]*figure{}
	for _, c := range r.params.clients {
		name := fmt.Sprintf("sessions/s with %d concurrent clients", c)
		if c == 1 {
			name = "sessions/s with 1 client"
		}
		rates[c] = newFigure(name, "1/s", true, false)
	}
	size := fmt.Sprintf("%d MiB", r.params.transferBytes>>20)
	if r.params.transferBytes < 1<<20 {
		size = fmt.Sprintf("%d KiB", r.params.transferBytes>>10)
	}
	upload := newFigure("upload "+size+" (client to `cat > /dev/null`)", "MiB/s", true, false)
	download := newFigure("download "+size+" (`head -c N /dev/zero` to client)", "MiB/s", true, false)
	chachaUpload := newFigure("upload "+size+", "+chachaCipher+" on both", "MiB/s", true, false)
	chachaDownload := newFigure("download "+size+", "+chachaCipher+" on both", "MiB/s", true, false)
	serverMemory := newFigure(fmt.Sprintf("server memory per idle session (%d sessions)", r.params.idleSessions), "KiB", false, false)
	vmMemory := newFigure("VM process memory per idle session", "MiB", false, false)

	record := func(f *figure, target string, value float64, err error) {
		if err != nil {
			f.failures[target]++
			logf("%s, %s: %v", target, f.name, err)
			return
		}
		f.samples[target] = append(f.samples[target], value)
	}
	// Each run or round measures every target in turn, one at a time, so
	// that load which comes or goes during the run shifts all targets
	// alike.
	logf("measuring latency")
	for range r.params.runs {
		for _, target := range r.targets {
			d, err := r.runTrue(target)
			record(connect, target.name, float64(d)/float64(time.Millisecond), err)
			d, err = r.firstPTYByte(target)
			record(pty, target.name, float64(d)/float64(time.Millisecond), err)
		}
	}
	logf("measuring sessions per second")
	for _, c := range r.params.clients {
		for range r.params.rounds {
			for _, target := range r.targets {
				rate, failed := r.sessionRate(target, c)
				rates[c].samples[target.name] = append(rates[c].samples[target.name], rate)
				rates[c].failures[target.name] += failed
			}
		}
	}
	logf("measuring throughput")
	for range r.params.rounds {
		for _, target := range r.targets {
			rate, err := r.upload(target, "")
			record(upload, target.name, rate, err)
			rate, err = r.download(target, "")
			record(download, target.name, rate, err)
			rate, err = r.upload(target, chachaCipher)
			record(chachaUpload, target.name, rate, err)
			rate, err = r.download(target, chachaCipher)
			record(chachaDownload, target.name, rate, err)
		}
	}
	logf("measuring memory")
	for range r.params.rounds {
		for _, target := range r.targets {
			serverKiB, vmMiB, err := r.idleMemory(target)
			record(serverMemory, target.name, serverKiB, err)
			if err == nil && vmMiB >= 0 {
				record(vmMemory, target.name, vmMiB, nil)
			}
		}
	}
	r.figures = []*figure{connect, pty}
	for _, c := range r.params.clients {
		r.figures = append(r.figures, rates[c])
	}
	r.figures = append(r.figures, upload, download, chachaUpload, chachaDownload, serverMemory)
	if len(vmMemory.samples) > 0 {
		r.figures = append(r.figures, vmMemory)
	}
}

// formatStats returns "median [min–max]" of samples, or "n/a".
func formatStats(samples []float64) string {
	if len(samples) == 0 {
		return "n/a"
	}
	median, low, high := stats(samples)
	return fmt.Sprintf("%s [%s–%s]", formatNumber(median), formatNumber(low), formatNumber(high))
}

func formatNumber(v float64) string {
	switch {
	case v >= 100 || v <= -100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10 || v <= -10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

// table returns the report as a markdown table: one row per figure, with
// throwawaysh on the test launcher, sshd, their ratio, and libkrun with
// the VM's share of the time when it ran.
func (r *benchRun) table() string {
	withLibkrun := r.hasTarget("libkrun")
	var b strings.Builder
	b.WriteString("| figure | unit | throwawaysh, test launcher | sshd | ratio throwawaysh/sshd |")
	if withLibkrun {
		b.WriteString(" throwawaysh, libkrun | VM share of the time |")
	}
	b.WriteString("\n|---|---|---|---|---|")
	if withLibkrun {
		b.WriteString("---|---|")
	}
	b.WriteString("\n")
	for _, f := range r.figures {
		test, sshd := f.samples["testlauncher"], f.samples["sshd"]
		ratio := "n/a"
		if len(test) > 0 && len(sshd) > 0 {
			testMedian, _, _ := stats(test)
			sshdMedian, _, _ := stats(sshd)
			if sshdMedian != 0 {
				ratio = strconv.FormatFloat(testMedian/sshdMedian, 'f', 2, 64)
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |", f.name, f.unit, withFailures(formatStats(test), f.failures["testlauncher"]),
			withFailures(formatStats(sshd), f.failures["sshd"]), ratio)
		if withLibkrun {
			krun := f.samples["libkrun"]
			share := ""
			if f.timeFigure && len(krun) > 0 && len(test) > 0 {
				krunMedian, _, _ := stats(krun)
				testMedian, _, _ := stats(test)
				share = fmt.Sprintf("%.0f%%", 100*(krunMedian-testMedian)/krunMedian)
			}
			fmt.Fprintf(&b, " %s | %s |", withFailures(formatStats(krun), f.failures["libkrun"]), share)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func withFailures(cell string, failures int) string {
	if failures == 0 {
		return cell
	}
	return fmt.Sprintf("%s, %d failed", cell, failures)
}

func (r *benchRun) hasTarget(name string) bool {
	return slices.ContainsFunc(r.targets, func(t *benchTarget) bool { return t.name == name })
}

// report returns the markdown section that docs/benchmarks.md records:
// the command, the machine and the table.
func (r *benchRun) report() string {
	var b strings.Builder
	command := os.Getenv(benchCommandEnv)
	if command == "" {
		command = "go test -run '^$' -bench '^BenchmarkCompareWithSSHD$' -benchtime 1x ./cmd/throwawaysh"
	}
	fmt.Fprintf(&b, "Produced by `%s` on %s.\n\n", command, time.Now().UTC().Format("2006-01-02"))
	b.WriteString("| machine | |\n|---|---|\n")
	fmt.Fprintf(&b, "| CPU | %s |\n", cpuModel())
	fmt.Fprintf(&b, "| cores | %d |\n", runtime.NumCPU())
	fmt.Fprintf(&b, "| kernel | %s |\n", kernelRelease())
	fmt.Fprintf(&b, "| Go | %s |\n", runtime.Version())
	fmt.Fprintf(&b, "| OpenSSH | %s |\n", openSSHVersion())
	fmt.Fprintf(&b, "| load average (1, 5, 15 min) | %s at the start, %s at the end (the benchmark's own load included) |\n", r.loadBefore, loadAverage())
	b.WriteString("\n")
	b.WriteString(r.table())
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for name := range r.skipped {
			if !yield(name) {
				return
			}
		}
	}) {
		fmt.Fprintf(&b, "\n%s skipped: %s\n", name, r.skipped[name])
	}
	return b.String()
}

func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for line := range strings.Lines(string(data)) {
		if name, value, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(name) == "model name" {
			return strings.TrimSpace(value)
		}
	}
	return "unknown"
}

// loadAverage returns the 1, 5 and 15 minute load averages, which show
// whether other jobs shared the machine during a run.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	fields := strings.Fields(string(data))
	if len(fields) < 3 {
		return "unknown"
	}
	return strings.Join(fields[:3], ", ")
}

func kernelRelease() string {
	data, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(data))
}

func openSSHVersion() string {
	// ssh -V prints its version on stderr.
	out, err := exec.Command("ssh", "-V").CombinedOutput()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

// newBenchRun starts the targets: throwawaysh with the test launcher,
// sshd, and throwawaysh with libkrun where it can boot guests. A target
// that cannot start is recorded in skipped with the reason.
func newBenchRun(tb testing.TB, params benchParams) *benchRun {
	tb.Helper()
	requireOpenSSHClient(tb)
	key := newBenchKey(tb)
	r := &benchRun{params: params, key: key, skipped: map[string]string{}, loadBefore: loadAverage()}
	r.targets = append(r.targets, startBenchServer(tb, "testlauncher", testLauncher(), krtestRootfs(tb), key))
	if sshd, reason := startSSHD(tb, key); reason != "" {
		r.skipped["sshd"] = reason
	} else {
		r.targets = append(r.targets, sshd)
	}
	if b, reason := libkrunBackend(); reason != "" {
		r.skipped["libkrun"] = reason
	} else {
		r.targets = append(r.targets, startBenchServer(tb, "libkrun", b.launcher, b.rootfs(tb, true), key))
	}
	return r
}

func requireOpenSSHClient(tb testing.TB) {
	tb.Helper()
	for _, program := range []string{"ssh", "ssh-keygen"} {
		if _, err := exec.LookPath(program); err != nil {
			tb.Fatalf("%s is required (apt-get install openssh-client): %v", program, err)
		}
	}
}

// BenchmarkCompareWithSSHD measures throwawaysh against OpenSSH's sshd, as
// docs/benchmarks.md describes, and prints the markdown report. Run it
// once with -benchtime 1x (make bench); each figure takes its own
// samples, so b.N only repeats the whole report.
func BenchmarkCompareWithSSHD(b *testing.B) {
	// go test stops its -timeout alarm before it runs benchmarks, so a
	// hung session would otherwise hold the run forever.
	watchdog := time.AfterFunc(benchWatchdog, func() {
		panic(fmt.Sprintf("BenchmarkCompareWithSSHD did not finish within %s; the goroutines below show where it hangs", benchWatchdog))
	})
	defer watchdog.Stop()
	for range b.N {
		r := newBenchRun(b, fullBench)
		r.measure(b.Logf)
		report := r.report()
		fmt.Println(report)
		if path := os.Getenv(benchDocEnv); path != "" {
			if err := writeBenchDoc(path, report); err != nil {
				b.Fatal(err)
			}
			fmt.Printf("report written to %s\n", path)
		}
		for _, target := range r.targets {
			if f := r.figures[0]; len(f.samples[target.name]) > 0 {
				median, _, _ := stats(f.samples[target.name])
				b.ReportMetric(median, target.name+"-true-ms")
			}
		}
	}
}

// writeBenchDoc puts report between benchDocStart and benchDocEnd in the
// file at path, keeping the text around them, or writes a file with only
// the report when path does not exist.
func writeBenchDoc(path, report string) error {
	section := benchDocStart + "\n" + report + benchDocEnd + "\n"
	old, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return os.WriteFile(path, []byte(section), 0o644)
	}
	if err != nil {
		return err
	}
	before, rest, found := strings.Cut(string(old), benchDocStart)
	_, after, foundEnd := strings.Cut(rest, benchDocEnd+"\n")
	if !found || !foundEnd {
		return fmt.Errorf("%s has no %s ... %s section; add the two lines where the report goes", path, benchDocStart, benchDocEnd)
	}
	return os.WriteFile(path, []byte(before+section+after), 0o644)
}

// The benchmark harness measures every figure once, with tiny sizes,
// against throwawaysh on the test launcher and against sshd where it is
// installed, and renders every row. It checks that each measurement
// works, never how fast it is.
func TestBenchHarnessTinyRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts sshd and runs every figure once; skipped in -short mode")
	}
	r := newBenchRun(t, tinyBench)
	if reason, skipped := r.skipped["sshd"]; skipped {
		t.Logf("sshd side skipped: %s", reason)
	}
	r.measure(t.Logf)

	for _, f := range r.figures {
		for _, target := range r.targets {
			if n := f.failures[target.name]; n > 0 {
				t.Errorf("%s, %s: %d failed samples", target.name, f.name, n)
			}
			if len(f.samples[target.name]) == 0 {
				t.Errorf("%s, %s: no sample", target.name, f.name)
			}
		}
	}
	for _, target := range r.targets {
		if err := target.idle(time.Now().Add(10 * time.Second)); err != nil {
			t.Errorf("%s after the run: %v", target.name, err)
		}
	}
	for _, target := range r.targets {
		if left := sshSessionProcesses(target.port); len(left) > 0 {
			t.Errorf("%s: processes of ended sessions still run: %v", target.name, left)
		}
	}
	report := r.report()
	for _, want := range []string{"| figure |", "sessions/s with 2 concurrent clients", chachaCipher + " on both", "server memory per idle session", "| cores |", "| load average (1, 5, 15 min) | "} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	if t.Failed() {
		for _, target := range r.targets {
			log, _ := os.ReadFile(target.logPath)
			t.Logf("%s log:\n%s", target.name, log)
		}
	}
}

// writeBenchDoc replaces only the marked section of an existing file.
func TestWriteBenchDocKeepsSurroundingText(t *testing.T) {
	path := t.TempDir() + "/benchmarks.md"
	doc := "# Benchmarks\n\nintro\n\n" + benchDocStart + "\nold figures\n" + benchDocEnd + "\n\nanalysis\n"
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeBenchDoc(path, "new figures\n"); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "# Benchmarks\n\nintro\n\n" + benchDocStart + "\nnew figures\n" + benchDocEnd + "\n\nanalysis\n"
	if string(got) != want {
		t.Errorf("file after writeBenchDoc:\n%s\nwant:\n%s", got, want)
	}

	if err := os.WriteFile(path, []byte("no markers\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeBenchDoc(path, "new figures\n"); err == nil || !strings.Contains(err.Error(), benchDocStart) {
		t.Errorf("file without markers: err = %v, want one naming %s", err, benchDocStart)
	}
}

// With a libkrun target the table gains its column and the VM's share of
// each time figure, computed from the medians.
func TestBenchTableWithLibkrun(t *testing.T) {
	r := &benchRun{targets: []*benchTarget{{name: "testlauncher"}, {name: "sshd"}, {name: "libkrun"}}}
	connect := newFigure("connect", "ms", false, true)
	connect.samples = map[string][]float64{
		"testlauncher": {30, 20, 10},
		"sshd":         {40, 40, 40},
		"libkrun":      {90, 100, 110},
	}
	rate := newFigure("rate", "1/s", true, false)
	rate.samples = map[string][]float64{"testlauncher": {8}, "sshd": {4}, "libkrun": {2}}
	rate.failures["libkrun"] = 3
	r.figures = []*figure{connect, rate}

	table := r.table()
	for _, want := range []string{
		"| figure | unit | throwawaysh, test launcher | sshd | ratio throwawaysh/sshd | throwawaysh, libkrun | VM share of the time |",
		"| connect | ms | 20.0 [10.0–30.0] | 40.0 [40.0–40.0] | 0.50 | 100 [90.0–110] | 80% |",
		"| rate | 1/s | 8.00 [8.00–8.00] | 4.00 [4.00–4.00] | 2.00 | 2.00 [2.00–2.00], 3 failed |  |",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
}

// The libkrun target's VM memory must count a child whose command line
// is only "throwawaysh-vm", as krun.KrunLauncher starts VM processes.
func TestVMProcessIDsFindsLauncherChildren(t *testing.T) {
	cmd := exec.Command("/bin/sleep", "30")
	cmd.Args[0] = krun.VMProcessName
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	if pids := vmProcessIDs(); !slices.Contains(pids, cmd.Process.Pid) {
		t.Errorf("vmProcessIDs() = %v, want it to contain the child %d started as %q", pids, cmd.Process.Pid, krun.VMProcessName)
	}
	rss, err := processesMemory(vmProcessIDs())
	if err != nil {
		t.Errorf("VM memory of the child: %v", err)
	}
	if rss == 0 {
		t.Errorf("VM memory of the child = 0 bytes, want more than 0")
	}
}
