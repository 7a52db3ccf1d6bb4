package agent

import (
	"os"

	"golang.org/x/sys/unix"
)

// Terminal mode opcodes of RFC 4254 section 8 that name a control
// character, mapped to the termios c_cc index. VDSUSP (11), VFLUSH (15) and
// VSTATUS (17) have no Linux equivalent and are ignored.
var modeControlChars = map[uint8]int{
	1: unix.VINTR, 2: unix.VQUIT, 3: unix.VERASE, 4: unix.VKILL, 5: unix.VEOF,
	6: unix.VEOL, 7: unix.VEOL2, 8: unix.VSTART, 9: unix.VSTOP, 10: unix.VSUSP,
	12: unix.VREPRINT, 13: unix.VWERASE, 14: unix.VLNEXT, 16: unix.VSWTC,
	18: unix.VDISCARD,
}

// termiosFlag is one termios flag bit in one of the four flag words.
type termiosFlag struct {
	word termiosWord
	bit  uint32
}

type termiosWord int

const (
	iflag termiosWord = iota
	oflag
	lflag
)

// Terminal mode opcodes of RFC 4254 section 8 (and IUTF8 from RFC 8160)
// that name a termios flag. The character size and parity modes (CS7, CS8,
// PARENB, PARODD: 90 to 93) are left out, because Linux's PTY driver forces
// CS8 and clears PARENB on every termios change.
var modeFlags = map[uint8]termiosFlag{
	30: {iflag, unix.IGNPAR}, 31: {iflag, unix.PARMRK}, 32: {iflag, unix.INPCK},
	33: {iflag, unix.ISTRIP}, 34: {iflag, unix.INLCR}, 35: {iflag, unix.IGNCR},
	36: {iflag, unix.ICRNL}, 37: {iflag, unix.IUCLC}, 38: {iflag, unix.IXON},
	39: {iflag, unix.IXANY}, 40: {iflag, unix.IXOFF}, 41: {iflag, unix.IMAXBEL},
	42: {iflag, unix.IUTF8},

	50: {lflag, unix.ISIG}, 51: {lflag, unix.ICANON}, 52: {lflag, unix.XCASE},
	53: {lflag, unix.ECHO}, 54: {lflag, unix.ECHOE}, 55: {lflag, unix.ECHOK},
	56: {lflag, unix.ECHONL}, 57: {lflag, unix.NOFLSH}, 58: {lflag, unix.TOSTOP},
	59: {lflag, unix.IEXTEN}, 60: {lflag, unix.ECHOCTL}, 61: {lflag, unix.ECHOKE},
	62: {lflag, unix.PENDIN},

	70: {oflag, unix.OPOST}, 71: {oflag, unix.OLCUC}, 72: {oflag, unix.ONLCR},
	73: {oflag, unix.OCRNL}, 74: {oflag, unix.ONOCR}, 75: {oflag, unix.ONLRET},
}

// modeDisabled is the SSH value for "no character", which Linux spells
// _POSIX_VDISABLE (0).
const modeDisabled = 255

// applyModes sets the terminal modes that an SSH client sent on the PTY
// slave tty before the process starts. Opcodes that Linux lacks, the
// character size and parity modes, and the line speeds (128, 129), which
// mean nothing to a PTY, are ignored, as RFC 4254 section 8 allows for
// modes a server does not know.
func applyModes(tty *os.File, modes map[uint8]uint32) error {
	if len(modes) == 0 {
		return nil
	}
	fd := int(tty.Fd())
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return err
	}
	words := [...]*uint32{iflag: &t.Iflag, oflag: &t.Oflag, lflag: &t.Lflag}
	for opcode, value := range modes {
		if index, ok := modeControlChars[opcode]; ok {
			switch {
			case value == modeDisabled:
				t.Cc[index] = 0
			case value < modeDisabled:
				t.Cc[index] = uint8(value)
			}
			continue
		}
		if flag, ok := modeFlags[opcode]; ok {
			if value != 0 {
				*words[flag.word] |= flag.bit
			} else {
				*words[flag.word] &^= flag.bit
			}
		}
	}
	return unix.IoctlSetTermios(fd, unix.TCSETS, t)
}
