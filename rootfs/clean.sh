#!/usr/bin/env bash
# Remove what rootfs/build.sh created in a rootfs directory.
#
# Usage: rootfs/clean.sh ROOTFS_DIR
#
# Removes the top-level entries listed in ROOTFS_DIR/.generated, then that
# list. Everything else in ROOTFS_DIR stays, which is how `make clean` keeps
# the Go sources and scripts that share the ./rootfs directory with the
# generated root. A directory without .generated is left alone.
set -euo pipefail

die() {
	echo "clean.sh: $*" >&2
	exit 1
}

if [ $# -ne 1 ] || [ -z "$1" ]; then
	echo "usage: $0 ROOTFS_DIR" >&2
	exit 2
fi
rootfs=$1
list="$rootfs/.generated"

if [ ! -e "$rootfs" ]; then
	echo "clean.sh: '$rootfs' does not exist, nothing to clean"
	exit 0
fi
if [ ! -f "$list" ]; then
	echo "clean.sh: no '$list', nothing to clean"
	exit 0
fi

# Check every entry before removing anything. build.sh writes only plain
# top-level names, so anything else means the list was edited or damaged.
entries=()
while IFS= read -r name || [ -n "$name" ]; do
	case $name in
	'' | . | .. | */* | .generated | testdata | *.go | *.sh | *.md | go.mod | go.sum)
		die "invalid entry '$name' in '$list': build.sh never generates it, so nothing was removed. Fix or delete the list, or remove the generated files by hand."
		;;
	esac
	entries+=("$name")
done <"$list"

for name in ${entries[@]+"${entries[@]}"}; do
	if [ -e "$rootfs/$name" ] || [ -L "$rootfs/$name" ]; then
		rm -rf -- "${rootfs:?}/$name"
		echo "clean.sh: removed $rootfs/$name"
	fi
done
rm -f -- "$list"
