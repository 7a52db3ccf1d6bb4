package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/throwawaysh/throwawaysh/internal/krtest"
	"github.com/throwawaysh/throwawaysh/middleware"
)

// startMetricsServer starts a test server as startServer does, with
// metrics served on 127.0.0.1:0 by the code the service uses. It returns
// the server and the metrics URL.
func startMetricsServer(t *testing.T, cfg config) (*testServer, string) {
	t.Helper()
	logs := &syncBuffer{}
	logger := newLogger(cfg, logs)
	metrics, httpServer, err := newMetricsServer(logger)
	if err != nil {
		t.Fatal(err)
	}
	metricsListener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stopMetrics := serveMetrics(httpServer, metricsListener, logger)

	sessions := middleware.NewTracker()
	srv, err := newServerWithMetrics(cfg, testLauncher(), sessions, metrics, logger)
	if err != nil {
		t.Fatalf("newServerWithMetrics: %v", err)
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Close()
		stopMetrics()
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	server := &testServer{addr: ln.Addr().String(), port: port, cfg: cfg, logs: logs, sessions: sessions}
	return server, "http://" + metricsListener.Addr().String() + "/metrics"
}

// scrape returns the text exposition at url.
func scrape(t *testing.T, url string) string {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: status %s: %s", url, resp.Status, body)
	}
	return string(body)
}

// metricValue returns the value of series, such as
// `throwawaysh_sessions_active` or `name{label="value"}`, in the text
// exposition, and whether it is there.
func metricValue(exposition, series string) (float64, bool) {
	for line := range strings.Lines(exposition) {
		name, value, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok || name != series {
			continue
		}
		n, err := strconv.ParseFloat(value, 64)
		return n, err == nil
	}
	return 0, false
}

// A console session that exits 0, one that exits 3, a PTY session, a
// session rejected by the per-address limit and a wrong password must
// show up in the scraped counts, with no session or VM left active.
func TestMetricsCountSessions(t *testing.T) {
	cfg := testConfig(t, krtestRootfs(t))
	cfg.MaxSessionsPerIP = 1
	srv, url := startMetricsServer(t, cfg)

	if r := srv.runSSH(t, sshCall{command: "exit 0"}); r.status != 0 {
		t.Fatalf("exit 0: status %d, stderr %q", r.status, r.stderr)
	}
	if r := srv.runSSH(t, sshCall{command: "exit 3"}); r.status != 3 {
		t.Fatalf("exit 3: status %d, stderr %q", r.status, r.stderr)
	}
	if r := srv.runSSH(t, sshCall{options: []string{"-tt"}, command: "true"}); r.status != 0 {
		t.Fatalf("PTY true: status %d, stderr %q", r.status, r.stderr)
	}
	if r := srv.runSSH(t, sshCall{command: "true", password: "wrong"}); r.status != 255 {
		t.Fatalf("wrong password: status %d, want 255 from the client", r.status)
	}

	// Two sessions from one address: the second goes over the limit of 1.
	client := srv.dialGo(t, "test", testPassword)
	heldSession, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	heldInput, _ := heldSession.StdinPipe()
	heldOutput, _ := heldSession.StdoutPipe()
	if err := heldSession.Start("echo ready; cat >/dev/null"); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(heldOutput).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("held session: first line %q, err %v", line, err)
	}
	rejected, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var rejectedStderr bytes.Buffer
	rejected.Stderr = &rejectedStderr
	if status := exitStatusOf(t, rejected.Run("true")); status != middleware.ExitCapacity {
		t.Fatalf("second session from the address: status %d, want %d; stderr %q", status, middleware.ExitCapacity, rejectedStderr.String())
	}
	_ = heldInput.Close()
	if status := exitStatusOf(t, heldSession.Wait()); status != 0 {
		t.Fatalf("held session: status %d", status)
	}

	want := map[string]float64{
		`throwawaysh_sessions_started_total{mode="console"}`:                  4,
		`throwawaysh_sessions_started_total{mode="pty"}`:                      1,
		`throwawaysh_sessions_ended_total{mode="console",outcome="exited"}`:   3,
		`throwawaysh_sessions_ended_total{mode="console",outcome="rejected"}`: 1,
		`throwawaysh_sessions_ended_total{mode="pty",outcome="exited"}`:       1,
		`throwawaysh_sessions_active`:                                         0,
		`throwawaysh_vm_processes`:                                            0,
		`throwawaysh_sessions_rejected_total{limit="per_connection"}`:         0,
		`throwawaysh_sessions_rejected_total{limit="per_client_address"}`:     1,
		`throwawaysh_sessions_rejected_total{limit="server"}`:                 0,
		`throwawaysh_auth_failures_total{method="password"}`:                  1,
		`throwawaysh_vm_boot_seconds_count`:                                   4,
		`throwawaysh_time_to_shell_seconds_count`:                             4,
	}
	// A session counts as ended once its VM is reaped, a moment after the
	// client got its exit status.
	var exposition string
	deadline := time.Now().Add(10 * time.Second)
	for {
		exposition = scrape(t, url)
		ended, _ := metricValue(exposition, `throwawaysh_sessions_ended_total{mode="console",outcome="exited"}`)
		active, _ := metricValue(exposition, `throwawaysh_sessions_active`)
		if (ended == 3 && active == 0) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for series, value := range want {
		got, ok := metricValue(exposition, series)
		if !ok {
			t.Errorf("%s missing from the exposition", series)
			continue
		}
		if got != value {
			t.Errorf("%s = %v, want %v", series, got, value)
		}
	}
	if _, ok := metricValue(exposition, "process_resident_memory_bytes"); !ok {
		t.Error("process_resident_memory_bytes missing: the process collector is not registered")
	}
	if t.Failed() {
		t.Logf("exposition:\n%s", exposition)
	}
}

// A metrics address that is not HOST:PORT, or that is the SSH address,
// stops the service with a usage error that names the flag and the value.
func TestConfigInvalidMetricsAddr(t *testing.T) {
	clearConfigEnv(t)
	root := krtest.Rootfs(t, false)
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"no port", []string{"--metrics-addr", "localhost"}, []string{"--metrics-addr", "SSH_METRICS_ADDR", `"localhost"`, "HOST:PORT"}},
		{"port out of range", []string{"--metrics-addr", ":70000"}, []string{"--metrics-addr", "70000", "0 to 65535"}},
		{"same as ssh", []string{"--listen-addr", "127.0.0.1:2222", "--metrics-addr", "127.0.0.1:2222"}, []string{"--metrics-addr", "--listen-addr"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := parseConfig(append([]string{"--rootfs", root}, tt.args...), io.Discard)
			var usage *usageError
			if !errors.As(err, &usage) {
				t.Fatalf("err = %v, want a usage error", err)
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}

	cfg, _, err := parseConfig([]string{"--rootfs", root, "--metrics-addr", "127.0.0.1:9100"}, io.Discard)
	if err != nil {
		t.Fatalf("valid address: %v", err)
	}
	if cfg.MetricsAddr != "127.0.0.1:9100" {
		t.Errorf("MetricsAddr = %q, want 127.0.0.1:9100", cfg.MetricsAddr)
	}
}

// phaseLine matches one "session phases" log line and captures its
// key=value fields.
var phaseLine = regexp.MustCompile(`session phases (.*)`)

// A console session and a PTY session each log one "session phases" line
// at info level with every phase, and a debug "session phase" line per
// phase.
func TestSessionPhasesLogged(t *testing.T) {
	srv := startServer(t, testConfig(t, krtestRootfs(t)), testLauncher())
	if r := srv.runSSH(t, sshCall{command: "echo hi"}); r.status != 0 {
		t.Fatalf("console: status %d, stderr %q", r.status, r.stderr)
	}
	if r := srv.runSSH(t, sshCall{options: []string{"-tt"}, command: "echo hi"}); r.status != 0 {
		t.Fatalf("PTY: status %d, stderr %q", r.status, r.stderr)
	}

	// The line follows "session end", after the VM is gone.
	var summaries []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		summaries = phaseLine.FindAllString(srv.logs.String(), -1)
		if len(summaries) >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(summaries) != 2 {
		t.Fatalf("%d session phases lines, want 2", len(summaries))
	}
	for _, line := range summaries {
		for _, key := range []string{"authenticated=", "vm_started=", "guest_ready=", "command_exited=", "torn_down=", "total="} {
			if !strings.Contains(line, key) {
				t.Errorf("session phases line lacks %s: %s", key, line)
			}
		}
	}
	logs := srv.logs.String()
	for _, phase := range []string{
		middleware.PhaseAuthenticated, middleware.PhaseVMStarted, middleware.PhaseGuestReady,
		middleware.PhaseCommandExited, middleware.PhaseTornDown,
	} {
		want := `phase="` + phase + `"`
		if !strings.Contains(phase, " ") {
			want = "phase=" + phase
		}
		if n := strings.Count(logs, want); n != 2 {
			t.Errorf("%d debug lines with %s, want 2 (one per session)", n, want)
		}
	}
	if t.Failed() {
		t.Logf("log:\n%s", logs)
	}
}

// Connections over the unauthenticated connection caps are counted.
func TestMetricsCountRejectedConnections(t *testing.T) {
	cfg := testConfig(t, krtestRootfs(t))
	cfg.MaxStartups, cfg.PerSourceMaxStartups = 2, 2
	srv, url := startMetricsServer(t, cfg)

	requireAccepted(t, dialSilent(t, srv, "127.0.0.1"))
	requireAccepted(t, dialSilent(t, srv, "127.0.0.1"))
	for range 3 {
		requireRejected(t, dialSilent(t, srv, "127.0.0.1"))
	}

	exposition := scrape(t, url)
	got, ok := metricValue(exposition, "throwawaysh_connections_rejected_total")
	if !ok {
		t.Fatalf("no throwawaysh_connections_rejected_total in:\n%s", exposition)
	}
	if got != 3 {
		t.Errorf("throwawaysh_connections_rejected_total = %v, want 3", got)
	}
}

// Session channels over the per-connection channel cap are counted as
// rejected by the open_channels limit.
func TestMetricsCountRejectedChannels(t *testing.T) {
	cfg := testConfig(t, krtestRootfs(t))
	cfg.MaxSessionsPerConnection = 2 // caps open session channels at 2
	srv, url := startMetricsServer(t, cfg)
	client := srv.dialGo(t, "test", testPassword)
	defer client.Close()

	for i := range 2 {
		channel, requests, err := client.OpenChannel("session", nil)
		if err != nil {
			t.Fatalf("session channel %d: %v", i+1, err)
		}
		defer channel.Close()
		go gossh.DiscardRequests(requests)
	}
	var open *gossh.OpenChannelError
	if _, _, err := client.OpenChannel("session", nil); !errors.As(err, &open) || open.Reason != gossh.Prohibited {
		t.Fatalf("third session channel: err = %v, want administratively prohibited", err)
	}

	exposition := scrape(t, url)
	if got, _ := metricValue(exposition, `throwawaysh_sessions_rejected_total{limit="open_channels"}`); got != 1 {
		t.Errorf(`throwawaysh_sessions_rejected_total{limit="open_channels"} = %v, want 1`, got)
	}
}
