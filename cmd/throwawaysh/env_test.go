package main

import (
	"strings"
	"testing"

	gossh "golang.org/x/crypto/ssh"
)

const envProbe = `printf '%s|' "${LANG-unset}" "${FOO-unset}" "${LD_PRELOAD-unset}" "${TZ-unset}" "${LC_ALL-unset}"`

func TestEnvAllowListConsoleAndPTY(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		srv := startServer(t, testConfig(t, b.rootfs(t, true)), b.launcher)
		setEnv := []string{
			"-o", "SetEnv=LANG=C.UTF-8 FOO=bar LD_PRELOAD=/tmp/x.so \"TZ=it's $odd\" LC_ALL=C",
		}
		want := "C.UTF-8|unset|unset|it's $odd|C|"

		got := srv.runSSH(t, sshCall{options: setEnv, command: envProbe})
		if string(got.stdout) != want {
			t.Errorf("console: stdout = %q, want %q (stderr %q)", got.stdout, want, got.stderr)
		}

		got = srv.runSSH(t, sshCall{options: append([]string{"-tt"}, setEnv...), command: envProbe})
		if !strings.Contains(string(got.stdout), want) {
			t.Errorf("pty: stdout = %q, want it to contain %q", got.stdout, want)
		}
	})
}

func TestEnvRequestRejectedForOtherNames(t *testing.T) {
	cfg := testConfig(t, krtestRootfs(t))
	cfg.AcceptEnv = []string{"FOO", "APP_*"}
	srv := startServer(t, cfg, testLauncher())
	client := srv.dialGo(t, "test", testPassword)

	tests := []struct {
		name, value string
		accepted    bool
	}{
		{"LANG", "C.UTF-8", true},
		{"LC_CTYPE", "C", true},
		{"FOO", "1", true},
		{"APP_MODE", "x", true},
		{"BAR", "1", false},
		{"PATH", "/evil", false},
		{"LD_PRELOAD", "/x.so", false},
		{"LD_LIBRARY_PATH", "/x", false},
		{"FOO", strings.Repeat("v", 5000), false},
	}
	session, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		err := session.Setenv(tt.name, tt.value)
		if (err == nil) != tt.accepted {
			t.Errorf("Setenv(%s, %d bytes): err = %v, want accepted=%v", tt.name, len(tt.value), err, tt.accepted)
		}
	}
	out, err := session.Output(`printf '%s|' "${LANG-unset}" "${FOO-unset}" "${BAR-unset}" "${PATH}" "${APP_MODE-unset}"`)
	if exitStatusOf(t, err) != 0 {
		t.Fatalf("probe failed: %q", out)
	}
	if !strings.HasPrefix(string(out), "C.UTF-8|1|unset|") || strings.Contains(string(out), "/evil") || !strings.HasSuffix(string(out), "|x|") {
		t.Errorf("guest environment = %q, want LANG and FOO and APP_MODE set, BAR unset and PATH untouched", out)
	}
}

func TestForwardingRequestsRejected(t *testing.T) {
	srv := startServer(t, testConfig(t, krtestRootfs(t)), testLauncher())
	client := srv.dialGo(t, "test", testPassword)
	session, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}

	ok, err := session.SendRequest("auth-agent-req@openssh.com", true, nil)
	if err != nil || ok {
		t.Errorf("agent forwarding request: ok=%v err=%v, want rejected", ok, err)
	}
	x11 := gossh.Marshal(struct {
		SingleConnection bool
		AuthProtocol     string
		AuthCookie       string
		ScreenNumber     uint32
	}{false, "MIT-MAGIC-COOKIE-1", "00", 0})
	ok, err = session.SendRequest("x11-req", true, x11)
	if err != nil || ok {
		t.Errorf("x11 request: ok=%v err=%v, want rejected", ok, err)
	}
	if _, err := client.Listen("tcp", "127.0.0.1:0"); err == nil {
		t.Error("remote port forwarding was accepted")
	}
	if _, err := client.Dial("tcp", srv.addr); err == nil {
		t.Error("local port forwarding was accepted")
	}

	// The session still works after the rejected requests.
	out, err := session.Output("echo still-here")
	if exitStatusOf(t, err) != 0 || string(out) != "still-here\n" {
		t.Errorf("session after rejected requests: %q, %v", out, err)
	}
}

func TestSSHConnectionVariablesAndHome(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		srv := startServer(t, testConfig(t, b.rootfs(t, true)), b.launcher)
		probe := `printf '%s|%s|%s\n' "$SSH_CONNECTION" "$SSH_CLIENT" "$(pwd)"`
		for _, options := range [][]string{nil, {"-tt"}} {
			got := srv.runSSH(t, sshCall{options: options, command: probe})
			fields := strings.Split(strings.TrimRight(string(got.stdout), "\r\n"), "|")
			if len(fields) != 3 {
				t.Fatalf("options %v: output %q", options, got.stdout)
			}
			connection := strings.Fields(fields[0])
			if len(connection) != 4 || connection[0] != "127.0.0.1" || connection[3] != srv.port {
				t.Errorf("options %v: SSH_CONNECTION = %q, want client address and port, then server address and port %s", options, fields[0], srv.port)
			}
			if len(connection) == 4 && fields[1] != connection[0]+" "+connection[1]+" "+srv.port {
				t.Errorf("options %v: SSH_CLIENT = %q", options, fields[1])
			}
			if !strings.HasSuffix(fields[2], "/root") {
				t.Errorf("options %v: working directory %q, want the home directory /root", options, fields[2])
			}
		}
	})
}

// An exec or subsystem request whose payload is not one SSH string is
// rejected: the SSH library would read it as an empty command and start a
// shell. No VM boots for it, and the session takes a proper request after.
func TestMalformedExecRequestRejected(t *testing.T) {
	srv := startServer(t, testConfig(t, krtestRootfs(t)), testLauncher())
	session := srv.goSession(t)
	for _, kind := range []string{"exec", "subsystem"} {
		ok, err := session.SendRequest(kind, true, []byte{0, 0, 0})
		if err != nil || ok {
			t.Errorf("%s with a 3-byte payload: ok=%v err=%v, want rejected", kind, ok, err)
		}
	}
	if strings.Contains(srv.logs.String(), "vm boot") {
		t.Error("a VM booted for a malformed request")
	}
	out, err := session.Output("echo after")
	if exitStatusOf(t, err) != 0 || string(out) != "after\n" {
		t.Errorf("session after the malformed requests: %q, %v", out, err)
	}
}
