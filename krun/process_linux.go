package krun

import (
	"os/exec"
	"syscall"
)

func setProcessAttributes(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	// NOTE: Linux sends Pdeathsig when the thread that started the child
	// exits, not the whole process. Go keeps its threads alive unless a
	// goroutine exits while locked to one, which this module never does.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
