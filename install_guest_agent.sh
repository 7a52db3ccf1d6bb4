#!/usr/bin/env bash
# Install the throwawaysh guest agent into a guest root filesystem.
#
# Usage: ./install_guest_agent.sh ROOTFS [AGENT_BINARY]
#
# Copies AGENT_BINARY (default: bin/throwawaysh-guest-agent next to this
# script, which is what `make build-agent` writes) to
# ROOTFS/usr/local/bin/throwawaysh-guest-agent with mode 0755. PTY sessions
# start that program inside the VM. The copy goes to a temporary name in the
# same directory first and is then renamed, so a VM booting at the same time
# sees either the old agent or the new one, never a partial file.
#
# The agent must be a statically linked ELF executable because the default
# rootfs has no C library. When ROOTFS/bin/busybox is a regular ELF file, the
# agent must also match its architecture.
set -euo pipefail
# Directories created here get mode 0755 whatever the caller's umask is.
umask 022

readonly agent_relpath=usr/local/bin/throwawaysh-guest-agent
readonly pt_interp=3

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly script_dir
readonly default_agent="$script_dir/bin/throwawaysh-guest-agent"

die() {
	echo "install_guest_agent.sh: $*" >&2
	exit 1
}

usage() {
	echo "usage: $0 ROOTFS [AGENT_BINARY]" >&2
	echo "  installs AGENT_BINARY (default: $default_agent) as ROOTFS/$agent_relpath" >&2
	exit 2
}

# read_uint FILE OFFSET SIZE ENDIAN prints the unsigned integer stored in SIZE
# bytes at OFFSET. ENDIAN is 1 for little-endian and 2 for big-endian, the
# values of the ELF EI_DATA byte. It fails when the file is too short.
read_uint() {
	local file=$1 offset=$2 size=$3 endian=$4
	local value=0 i
	local -a bytes
	read -r -a bytes <<<"$(od -An -tu1 -v -j "$offset" -N "$size" -- "$file" | tr '\n' ' ')"
	[ "${#bytes[@]}" -eq "$size" ] || return 1
	if [ "$endian" = 1 ]; then
		for ((i = size - 1; i >= 0; i--)); do
			value=$((value * 256 + bytes[i]))
		done
	else
		for ((i = 0; i < size; i++)); do
			value=$((value * 256 + bytes[i]))
		done
	fi
	echo "$value"
}

# machine_name prints a readable name for an ELF e_machine value.
machine_name() {
	case $1 in
	3) echo "386" ;;
	40) echo "arm" ;;
	62) echo "amd64" ;;
	183) echo "arm64" ;;
	243) echo "riscv64" ;;
	21) echo "ppc64" ;;
	22) echo "s390x" ;;
	*) echo "ELF machine $1" ;;
	esac
}

# elf_ident FILE prints "CLASS ENDIAN TYPE MACHINE" from the ELF header of
# FILE, or fails when FILE does not start with an ELF header.
elf_ident() {
	local file=$1
	local -a ident
	read -r -a ident <<<"$(od -An -tu1 -v -N 6 -- "$file" | tr '\n' ' ')"
	[ "${#ident[@]}" -eq 6 ] || return 1
	[ "${ident[0]} ${ident[1]} ${ident[2]} ${ident[3]}" = "127 69 76 70" ] || return 1

	local class=${ident[4]} endian=${ident[5]} type machine
	case "$class/$endian" in
	1/1 | 1/2 | 2/1 | 2/2) ;;
	*) return 1 ;;
	esac
	type=$(read_uint "$file" 16 2 "$endian") || return 1
	machine=$(read_uint "$file" 18 2 "$endian") || return 1
	echo "$class $endian $type $machine"
}

# has_interpreter FILE CLASS ENDIAN succeeds when FILE has a PT_INTERP program
# header, which means it is dynamically linked and needs a loader and libraries
# in the guest.
has_interpreter() {
	local file=$1 class=$2 endian=$3
	local phoff phentsize phnum i type
	if [ "$class" = 2 ]; then
		phoff=$(read_uint "$file" 32 8 "$endian") || return 2
		phentsize=$(read_uint "$file" 54 2 "$endian") || return 2
		phnum=$(read_uint "$file" 56 2 "$endian") || return 2
	else
		phoff=$(read_uint "$file" 28 4 "$endian") || return 2
		phentsize=$(read_uint "$file" 42 2 "$endian") || return 2
		phnum=$(read_uint "$file" 44 2 "$endian") || return 2
	fi
	# A larger count comes from a damaged header. Bounding it keeps this loop
	# from forking od thousands of times.
	[ "$phnum" -le 256 ] || return 2
	[ "$phoff" -ge 0 ] || return 2
	for ((i = 0; i < phnum; i++)); do
		type=$(read_uint "$file" $((phoff + i * phentsize)) 4 "$endian") || return 2
		if [ "$type" = "$pt_interp" ]; then
			return 0
		fi
	done
	return 1
}

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
	usage
fi
rootfs=$1
agent=${2:-$default_agent}
[ -n "$rootfs" ] || usage
[ -n "$agent" ] || usage

if [ ! -e "$rootfs" ]; then
	die "rootfs '$rootfs' not found: build one with 'make rootfs ROOTFS=$rootfs' or pass an existing directory"
fi
if [ ! -d "$rootfs" ]; then
	die "rootfs '$rootfs' is not a directory: pass the directory that the VM uses as its root"
fi

if [ ! -e "$agent" ]; then
	die "agent binary '$agent' not found: build it with 'make build-agent' or pass its path as the second argument"
fi
if [ ! -f "$agent" ]; then
	die "agent binary '$agent' is not a regular file: pass the binary built by 'make build-agent'"
fi

agent_ident=$(elf_ident "$agent") ||
	die "agent binary '$agent' is not an ELF executable: build it for Linux with 'make build-agent'"
read -r agent_class agent_endian agent_type agent_machine <<<"$agent_ident"
if [ "$agent_type" != 2 ] && [ "$agent_type" != 3 ]; then
	die "agent binary '$agent' is an ELF file but not an executable (e_type $agent_type): build it with 'make build-agent'"
fi

status=0
has_interpreter "$agent" "$agent_class" "$agent_endian" || status=$?
case $status in
0) die "agent binary '$agent' is dynamically linked, but the guest may have no C library: build it with 'make build-agent' (CGO_ENABLED=0)" ;;
1) ;;
*) die "agent binary '$agent' has a damaged ELF program header table: rebuild it with 'make build-agent'" ;;
esac

# The rootfs' busybox shows the guest architecture. A KVM guest runs on the
# host CPU, so an agent for another architecture fails to start in the VM.
reference="$rootfs/bin/busybox"
if [ -f "$reference" ] && [ ! -L "$reference" ] && ref_ident=$(elf_ident "$reference"); then
	read -r ref_class _ _ ref_machine <<<"$ref_ident"
	if [ "$ref_machine" != "$agent_machine" ] || [ "$ref_class" != "$agent_class" ]; then
		die "agent binary '$agent' is built for $(machine_name "$agent_machine") but '$reference' is $(machine_name "$ref_machine"): rebuild it with 'make build-agent GUEST_ARCH=$(machine_name "$ref_machine")'"
	fi
fi

# Symbolic links among the target directories would be resolved by the host,
# not inside the rootfs as the guest resolves them, so an absolute link would
# make this script write outside the rootfs.
for dir in usr usr/local usr/local/bin; do
	if [ -L "$rootfs/$dir" ]; then
		die "'$rootfs/$dir' is a symbolic link: replace it with a real directory, because this script does not follow links inside a rootfs"
	fi
	if [ -e "$rootfs/$dir" ] && [ ! -d "$rootfs/$dir" ]; then
		die "'$rootfs/$dir' exists and is not a directory: remove it so that the agent can be installed under $agent_relpath"
	fi
done

dest="$rootfs/$agent_relpath"
dest_dir=$(dirname "$dest")
if [ -d "$dest" ] && [ ! -L "$dest" ]; then
	die "'$dest' is a directory: remove it and run this script again"
fi

mkdir -p "$dest_dir"
tmp=$(mktemp "$dest_dir/.throwawaysh-guest-agent.XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
cp -- "$agent" "$tmp"
chmod 0755 "$tmp"
# mv treats a symbolic link to a directory as that directory and would move
# the file into it, so a link at dest is removed first. That case loses the
# atomic replacement.
if [ -L "$dest" ]; then
	rm -f -- "$dest"
fi
mv -f -- "$tmp" "$dest"
trap - EXIT

echo "installed $agent as $dest"
