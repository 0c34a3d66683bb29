#!/bin/bash
# Build a kernel from Debian's source package, as tests/kernels.sh does for
# the kernels of its BUILT table (the debug kernel, the real guest's):
#
#   tests/kernel-build.sh SOURCE_DEB CONFIG FRAGMENT MODULES OUT_DIR
#
# SOURCE_DEB is a linux-source-X.Y package.  With MODULES (space
# separated), CONFIG is the config of the Debian kernel built from it, and
# every module but those is configured out (localmodconfig); `make
# bindeb-pkg` builds it, and OUT_DIR gets its linux-image and linux-headers
# packages.  With none, CONFIG is a make target to start from (tinyconfig)
# and OUT_DIR gets the kernel image alone (bzImage).  Either way FRAGMENT
# is merged over the start and the rest follows from Kconfig
# (olddefconfig); OUT_DIR also gets the final config (config) and the
# build's log (build.log).  The sources and objects live in OUT_DIR.tmp
# while it runs.
set -euo pipefail

(($# == 5)) || {
	sed -n '2,17s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
	exit 2
}
source_deb=$(realpath "$1") config=$2
fragment=$(realpath "$3") modules=$4 out=$5
work=$out.tmp

rm -rf "$work"
mkdir -p "$work/o" "$out"
trap 'rm -rf "$work"' EXIT
dpkg-deb --fsys-tarfile "$source_deb" |
	tar -x -C "$work" --wildcards --strip-components=3 './usr/src/*.tar.xz'
tar -xaf "$work"/linux-source-*.tar.xz -C "$work"
src=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'linux-source-*')

for m in $modules; do
	echo "$m 0 0"
done >"$work/lsmod"
{
	if [[ -n $modules ]]; then
		cp "$config" "$work/o/.config"
		make -C "$src" O="$work/o" LSMOD="$work/lsmod" localmodconfig </dev/null
	else
		make -C "$src" O="$work/o" "$config"
	fi
	"$src/scripts/kconfig/merge_config.sh" -O "$work/o" -m "$work/o/.config" \
		"$fragment"
	make -C "$src" O="$work/o" olddefconfig
} >"$out/build.log" 2>&1
# What the fragment asks for must be what Kconfig gave.
missing=$(grep -E '^(CONFIG_[A-Z0-9_]+=|# CONFIG_[A-Z0-9_]+ is not set)' "$fragment" |
	sed 's/^# \(CONFIG_[A-Z0-9_]*\) is not set/\1=n/' | while IFS= read -r line; do
	sym=${line%%=*}
	if [[ ${line#*=} == n ]]; then
		! grep -q "^$sym=" "$work/o/.config" || echo "$line"
	else
		grep -qxF "$line" "$work/o/.config" || echo "$line"
	fi
done)
[[ -z $missing ]] || {
	echo "kernel-build.sh: Kconfig did not give: $(xargs <<<"$missing")" >&2
	exit 1
}
cp "$work/o/.config" "$out/config"

echo "building in $work with $(nproc) jobs"
if [[ -n $modules ]]; then
	target=(bindeb-pkg DPKG_FLAGS=-d)
else
	target=(bzImage)
fi
make -C "$src" O="$work/o" -j"$(nproc)" "${target[@]}" >>"$out/build.log" 2>&1 || {
	tail -n 30 "$out/build.log" >&2
	exit 1
}
if [[ -n $modules ]]; then
	rm -f "$work"/linux-libc-dev_*.deb
	mv "$work"/linux-image-*.deb "$work"/linux-headers-*.deb "$out/"
else
	mv "$work/o/arch/x86/boot/bzImage" "$out/"
fi
