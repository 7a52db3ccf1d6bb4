#!/usr/bin/env bash
# Build the default throwawaysh guest root filesystem from Debian's
# busybox-static package, without root.
#
# Usage: rootfs/build.sh ROOTFS_DIR [AGENT_BINARY]
#
# Environment:
#   BUSYBOX_DEB=path.deb  use this busybox-static package instead of running
#                         `apt-get download busybox-static`.
#
# The result has a static busybox at bin/busybox with relative links for its
# applets, a root user whose shell is /bin/sh, /etc/profile, /etc/hostname,
# and the empty directories that the guest's init mounts over (dev, proc, sys,
# run). With AGENT_BINARY, it also installs the guest agent through
# install_guest_agent.sh.
#
# Running it again is safe. It replaces bin/busybox and never overwrites any
# other existing file or link, so edits to etc/ survive. The top-level entries
# it creates are listed in ROOTFS_DIR/.generated, which rootfs/clean.sh reads.
#
# Exit status: 0 on success, 2 for bad usage, 3 when no busybox-static package
# could be obtained, 1 for any other failure.
set -euo pipefail
umask 022

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly script_dir
repo_dir=$(dirname "$script_dir")
readonly repo_dir

# Every top-level entry this script may create. clean.sh removes the ones
# recorded in .generated.
readonly top_level_entries=(bin sbin usr etc root tmp dev proc sys run)
# Directories this script writes into. They must not be symbolic links,
# because the host would resolve a link differently from the guest.
readonly write_dirs=(
	bin sbin usr usr/bin usr/sbin usr/share usr/share/doc
	usr/share/doc/busybox-static usr/local usr/local/bin
	etc root tmp dev proc sys run
)
# Directories that may hold busybox applet links, as printed by
# `busybox --list-full`.
readonly applet_dirs=(bin sbin usr/bin usr/sbin)

die() {
	echo "build.sh: $*" >&2
	exit 1
}

# unavailable reports that no busybox-static package could be obtained. Its
# exit status 3 lets tests tell a host without the package apart from a bug.
unavailable() {
	echo "build.sh: $*" >&2
	exit 3
}

usage() {
	echo "usage: $0 ROOTFS_DIR [AGENT_BINARY]" >&2
	exit 2
}

# write_new_file PATH CONTENT writes CONTENT to PATH unless PATH already exists
# (as a file, directory or link). It writes a temporary file in the same
# directory and renames it, so an interrupted run leaves no partial file.
write_new_file() {
	local path=$1 content=$2 tmp
	if [ -e "$path" ] || [ -L "$path" ]; then
		return 0
	fi
	tmp=$(mktemp "$path.XXXXXX")
	printf '%s' "$content" >"$tmp"
	chmod 0644 "$tmp"
	mv -f -- "$tmp" "$path"
}

# link_applet ENTRY creates the link for one line of `busybox --list-full`,
# such as usr/bin/awk, pointing at bin/busybox with a relative target so that
# it resolves the same on the host and in the guest.
link_applet() {
	local entry=$1 dir name target allowed=false d
	dir=${entry%/*}
	name=${entry##*/}
	for d in "${applet_dirs[@]}"; do
		if [ "$dir" = "$d" ]; then
			allowed=true
		fi
	done
	# Entries outside the known directories (such as linuxrc, an initrd hook)
	# are not needed in the guest.
	if [ "$allowed" != true ] || [ -z "$name" ]; then
		return 0
	fi
	case $dir in
	bin) target=busybox ;;
	sbin) target=../bin/busybox ;;
	usr/bin | usr/sbin) target=../../bin/busybox ;;
	esac
	if [ -e "$rootfs/$entry" ] || [ -L "$rootfs/$entry" ]; then
		return 0
	fi
	ln -s -- "$target" "$rootfs/$entry"
	linked=$((linked + 1))
}

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
	usage
fi
rootfs=$1
agent=${2:-}
if [ -z "$rootfs" ]; then
	usage
fi

# -d follows a symbolic link, so a link to a directory is accepted as the root.
if { [ -e "$rootfs" ] || [ -L "$rootfs" ]; } && [ ! -d "$rootfs" ]; then
	die "'$rootfs' exists and is not a directory: remove it or pass another ROOTFS_DIR"
fi
if [ -n "$agent" ] && [ ! -e "$agent" ]; then
	die "agent binary '$agent' not found: build it with 'make build-agent' or omit the second argument"
fi
for dir in "${write_dirs[@]}"; do
	if [ -L "$rootfs/$dir" ]; then
		die "'$rootfs/$dir' is a symbolic link: replace it with a real directory, because this script does not follow links inside a rootfs"
	fi
	if [ -e "$rootfs/$dir" ] && [ ! -d "$rootfs/$dir" ]; then
		die "'$rootfs/$dir' exists and is not a directory: remove it or pass another ROOTFS_DIR"
	fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/throwawaysh-rootfs.XXXXXX")
trap 'rm -rf -- "$work"' EXIT

# Get the package.
if [ -n "${BUSYBOX_DEB:-}" ]; then
	if [ ! -f "$BUSYBOX_DEB" ]; then
		unavailable "BUSYBOX_DEB='$BUSYBOX_DEB' not found: point it at a downloaded busybox-static .deb file"
	fi
	deb=$(cd "$(dirname "$BUSYBOX_DEB")" && pwd)/$(basename "$BUSYBOX_DEB")
	echo "build.sh: using $deb"
else
	if ! command -v apt-get >/dev/null 2>&1; then
		unavailable "apt-get not found, so this host is not Debian or Ubuntu. Download Debian's busybox-static package for the guest architecture (packages.debian.org/busybox-static) and run again with BUSYBOX_DEB=path/to/busybox-static.deb"
	fi
	mkdir "$work/download"
	echo "build.sh: apt-get download busybox-static"
	# apt prints a harmless warning when it runs as root and its _apt user
	# cannot write to the private temp dir, so its output is shown only on
	# failure.
	if ! (cd "$work/download" && apt-get download busybox-static) >"$work/apt.log" 2>&1; then
		cat "$work/apt.log" >&2
		unavailable "apt-get download busybox-static failed. If apt has no package lists yet, run 'apt-get update' as root and try again. Without network access, set BUSYBOX_DEB=path/to/busybox-static.deb"
	fi
	debs=("$work"/download/busybox-static_*.deb)
	if [ ! -f "${debs[0]}" ]; then
		cat "$work/apt.log" >&2
		die "apt-get download busybox-static wrote no busybox-static_*.deb file"
	fi
	deb=${debs[0]}
fi

# Unpack it. A .deb is an ar archive holding data.tar.*, so ar and tar can
# stand in for dpkg-deb on other hosts.
mkdir "$work/pkg"
if command -v dpkg-deb >/dev/null 2>&1; then
	dpkg-deb -x "$deb" "$work/pkg" || die "cannot unpack '$deb' with dpkg-deb: is it a .deb file?"
elif command -v ar >/dev/null 2>&1; then
	mkdir "$work/ar"
	(cd "$work/ar" && ar x "$deb") || die "cannot unpack '$deb' with ar: is it a .deb file?"
	data=("$work"/ar/data.tar*)
	[ -f "${data[0]}" ] || die "'$deb' contains no data.tar archive: is it a .deb file?"
	tar -xf "${data[0]}" -C "$work/pkg" || die "cannot unpack ${data[0]##*/} from '$deb'"
else
	die "neither dpkg-deb nor ar is installed: install dpkg or binutils to unpack '$deb'"
fi
busybox_src="$work/pkg/bin/busybox"
if [ ! -f "$busybox_src" ]; then
	die "'$deb' contains no bin/busybox: use the busybox-static package, not busybox"
fi

# Record new top-level entries before creating them, so that clean.sh also
# finds the output of an interrupted run.
mkdir -p -- "$rootfs"
generated="$rootfs/.generated"
new_entries=()
for name in "${top_level_entries[@]}"; do
	if [ ! -e "$rootfs/$name" ] && [ ! -L "$rootfs/$name" ]; then
		new_entries+=("$name")
	fi
done
{
	if [ -f "$generated" ]; then
		cat -- "$generated"
	fi
	if [ "${#new_entries[@]}" -gt 0 ]; then
		printf '%s\n' "${new_entries[@]}"
	fi
} | sort -u >"$work/generated"
mv -f -- "$work/generated" "$generated"
chmod 0644 "$generated"

# Directories. tmp is world-writable with the sticky bit, as on any Linux
# system. root is private to the root user.
for dir in "${write_dirs[@]}"; do
	mkdir -p -- "$rootfs/$dir"
done
chmod 0700 "$rootfs/root"
chmod 1777 "$rootfs/tmp"

# Busybox itself, replaced atomically.
tmp=$(mktemp "$rootfs/bin/.busybox.XXXXXX")
cp -- "$busybox_src" "$tmp"
chmod 0755 "$tmp"
if [ -d "$rootfs/bin/busybox" ] && [ ! -L "$rootfs/bin/busybox" ]; then
	rm -f -- "$tmp"
	die "'$rootfs/bin/busybox' is a directory: remove it and run this script again"
fi
mv -f -- "$tmp" "$rootfs/bin/busybox"
if [ -f "$work/pkg/usr/share/doc/busybox-static/copyright" ]; then
	cp -- "$work/pkg/usr/share/doc/busybox-static/copyright" "$rootfs/usr/share/doc/busybox-static/copyright"
fi

# Applet links. The applet list comes from running busybox on this host,
# which works when the host has the guest's architecture, as KVM requires.
linked=0
if applets=$("$rootfs/bin/busybox" --list-full 2>"$work/list.err"); then
	while IFS= read -r entry; do
		if [ -n "$entry" ] && [ "$entry" != bin/busybox ]; then
			link_applet "$entry"
		fi
	done <<<"$applets"
	echo "build.sh: $linked new busybox applet links"
else
	cat "$work/list.err" >&2
	# NOTE: only bin/sh is linked in this case. Debian's busybox shell still
	# runs its own applets (ls, cat, ...) without links, but programs that
	# exec /usr/bin/env and similar paths fail until the links exist.
	echo "build.sh: warning: cannot run '$rootfs/bin/busybox' on this host (another architecture?), so only bin/sh was linked. Run '/bin/busybox --install -s' inside the guest to link the other applets." >&2
	link_applet bin/sh
fi

# Configuration files. Existing files are kept.
write_new_file "$rootfs/etc/passwd" 'root:x:0:0:root:/root:/bin/sh
'
write_new_file "$rootfs/etc/group" 'root:x:0:
'
write_new_file "$rootfs/etc/hostname" 'throwawaysh
'
write_new_file "$rootfs/etc/hosts" '127.0.0.1	localhost throwawaysh
::1	localhost
'
# shellcheck disable=SC2016 # $ signs are for the guest shell, not for this script.
write_new_file "$rootfs/etc/profile" 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PS1='"'"'\u@\h:\w\$ '"'"'
umask 022
'

if [ -n "$agent" ]; then
	bash "$repo_dir/install_guest_agent.sh" "$rootfs" "$agent"
fi

echo "build.sh: rootfs ready in $rootfs"
