package agent

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/pkg/sftp"
)

// subsystemProcess is a subsystem that the agent serves itself, such as
// SFTP. It has no PTY and no child process.
type subsystemProcess struct {
	id   uint32
	name string
	streamSlot
}

// startSubsystem registers the subsystem of m, reports it started with the
// agent's own pid, and serves it once its data stream arrives.
func (s *server) startSubsystem(m *StartMsg) {
	if m.Subsystem != SubsystemSFTP {
		// DecodeMessage rejects other names, so this is a guard only.
		s.sendError(m.ID, fmt.Sprintf("unsupported subsystem %s; use %q", quote(m.Subsystem, 32), SubsystemSFTP))
		return
	}
	if reason := s.checkNewID(m.ID); reason != "" {
		s.sendError(m.ID, reason)
		return
	}
	p := &subsystemProcess{
		id:         m.ID,
		name:       m.Subsystem,
		streamSlot: streamSlot{streams: make(chan *dataStream, 1)},
	}
	s.mu.Lock()
	s.subsystems[m.ID] = p
	s.mu.Unlock()
	s.logger.Info("subsystem started", "id", m.ID, "subsystem", m.Subsystem)

	if err := s.send(&StartedMsg{ID: m.ID, PID: os.Getpid()}); err != nil {
		s.logger.Warn("report started subsystem", "id", m.ID, "err", err)
	}
	s.wg.Add(1)
	go s.runSubsystem(p)
}

// runSubsystem waits for the subsystem's data stream, serves SFTP on it
// and reports the exit status: 0 when the host ended the session, 1 when
// the server failed or no stream came.
func (s *server) runSubsystem(p *subsystemProcess) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.subsystems, p.id)
		s.mu.Unlock()
	}()

	status := 0
	stream := p.awaitStream(s.attachTimeout, s.done)
	switch {
	case stream == nil && s.shuttingDown():
		return
	case stream == nil:
		s.sendError(p.id, fmt.Sprintf("no data stream attached within %s; the %s subsystem did not start", s.attachTimeout, p.name))
		status = 1
	default:
		if err := s.serveSFTP(stream); err != nil {
			s.logger.Warn("sftp server failed", "id", p.id, "err", err)
			status = 1
		}
		// The host reads end of file after the last SFTP packet.
		_ = stream.stream.Close()
	}
	if s.shuttingDown() {
		return
	}
	s.logger.Info("subsystem exited", "id", p.id, "subsystem", p.name, "status", status)
	_ = s.send(&ExitMsg{ID: p.id, Status: status})
}

// serveSFTP runs an SFTP server on stream until the host closes its write
// half or the connection ends. Paths resolve in the guest filesystem from
// the account's home directory, or from / when it does not exist.
func (s *server) serveSFTP(stream *dataStream) error {
	var opts []sftp.ServerOption
	if info, err := os.Stat(s.account.home); err == nil && info.IsDir() {
		opts = append(opts, sftp.WithServerWorkingDirectory(s.account.home))
	}
	server, err := sftp.NewServer(&streamConn{Reader: stream.input, WriteCloser: stream.stream}, opts...)
	if err != nil {
		return fmt.Errorf("start sftp server: %w", err)
	}
	if err := server.Serve(); err != nil && !errors.Is(err, io.EOF) && !s.shuttingDown() {
		return fmt.Errorf("serve sftp: %w", err)
	}
	return nil
}

// streamConn joins a data stream's input reader, which may hold bytes
// read after the attach line, with its write half.
type streamConn struct {
	io.Reader
	io.WriteCloser
}
