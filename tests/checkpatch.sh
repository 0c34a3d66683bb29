#!/bin/bash
# checkpatch.pl --strict over the module's sources.  The script comes from
# Debian's linux-source package, unpacked once into the test cache.
set -euo pipefail

TESTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$TESTS_DIR")
DIR=$TESTS_DIR/.cache/checkpatch
SRC=linux-source-6.1

if [[ ! -x $DIR/scripts/checkpatch.pl ]]; then
	mkdir -p "$DIR"
	(cd "$DIR" && apt-get download -q -o APT::Sandbox::User=root "$SRC" >/dev/null)
	deb=$(echo "$DIR/${SRC}"_*.deb)
	dpkg-deb --fsys-tarfile "$deb" |
		tar -xO "./usr/src/$SRC.tar.xz" |
		tar -xJ -C "$DIR" --strip-components=1 \
			"$SRC/scripts/checkpatch.pl" "$SRC/scripts/spelling.txt" \
			"$SRC/scripts/const_structs.checkpatch"
	rm -f "$deb"
fi
"$DIR/scripts/checkpatch.pl" --strict --no-tree --terse --show-types \
	-f "$REPO_ROOT"/src/*.[ch]
