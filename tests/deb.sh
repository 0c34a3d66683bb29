#!/bin/bash
# The Debian package, built as `make deb` builds it, without network, and
# checked by lintian (no error, no warning); then the same package with the
# version bumped (dkms.conf and debian/changelog), for the upgrade test.
#
#   tests/deb.sh OUT_DIR     OUT_DIR/current.deb and OUT_DIR/next.deb
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$(realpath -m "$1")
rm -rf "$out"
mkdir -p "$out"

# make deb DEB_DIR=$2 in tree $1, with no network; prints the .deb's path.
build() {
	unshare --net make -C "$1" -s deb DEB_DIR="$2" >&2
	ls "$2"/*.deb
}

deb=$(build "$REPO_ROOT" "$out/current")
lintian --fail-on error,warning "$out"/current/*.changes
ln -s "$deb" "$out/current.deb"

# A copy of the tree with the version bumped.
tree=$out/next-tree
mkdir -p "$tree"
cp -r "$REPO_ROOT"/{Kbuild,Makefile,dkms.conf,README.md,debian,src,tools,udev} "$tree"/
version=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"$/\1/p' "$tree/dkms.conf")
next=$version.1
sed -i "s/^PACKAGE_VERSION=.*/PACKAGE_VERSION=\"$next\"/" "$tree/dkms.conf"
{
	printf 'kvm-lapic-pin (%s) unstable; urgency=medium\n\n' "$next"
	printf '  * Test build: the version bumped, for the upgrade test.\n\n'
	printf ' -- %s  %s\n\n' "$(dpkg-parsechangelog -l "$tree/debian/changelog" -S Maintainer)" \
		"$(date -R)"
	cat "$tree/debian/changelog"
} >"$tree/debian/changelog.new"
mv "$tree/debian/changelog.new" "$tree/debian/changelog"
ln -s "$(build "$tree" "$out/next")" "$out/next.deb"
rm -rf "$tree"
echo "built $(basename "$deb") and $(basename "$(readlink "$out/next.deb")")"
