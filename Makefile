# SPDX-License-Identifier: GPL-2.0
#
#   make                    build kvm_lapic_pin.ko for the running kernel
#   make KERNELRELEASE=V    ... for kernel V (or KVER=V, or KDIR=its build dir)
#   sudo make install       DKMS install for kernel V (default: running one;
#                           its headers in /lib/modules/V/build),
#                           kvm-lapic-pin-check, udev rule, modprobe.d
#                           example; loads the module now if kvm is loaded
#   sudo make uninstall     remove all of it
#   make deb                the Debian package deb/kvm-lapic-pin-dkms_V_all.deb
#                           (DEB_DIR=D: in D; needs debhelper and dh-dkms)
#   sudo make sign          sign the built module with DKMS's MOK key
#   make check              the whole test suite (KERNELS="6.1 7.3 ..." or quick)
#   make bench              the benchmark, into bench/out/ (QUICK=1: short
#                           run; KERNELS="6.12-trixie" for some)
KVER ?= $(if $(KERNELRELEASE),$(KERNELRELEASE),$(shell uname -r))
KDIR ?= /lib/modules/$(KVER)/build
# KERNELRELEASE only picks KVER; kbuild must compute its own.
MAKEOVERRIDES := $(filter-out KERNELRELEASE=%,$(MAKEOVERRIDES))

PKG := kvm-lapic-pin
VERSION := $(shell sed -n 's/^PACKAGE_VERSION="\(.*\)"$$/\1/p' dkms.conf)
SRC_DIR := /usr/src/$(PKG)-$(VERSION)
RULES := /usr/lib/udev/rules.d/90-kvm-lapic-pin.rules
MODPROBE_CONF := /etc/modprobe.d/kvm-lapic-pin.conf
MOK := /var/lib/dkms/mok
# Where install-files puts kvm-lapic-pin-check and its manual page (the
# package: /usr/sbin and /usr/share/man).
SBINDIR ?= /usr/local/sbin
MANDIR ?= /usr/local/share/man
CHECK := kvm-lapic-pin-check
# What the package is built from, and where.
DEB_DIR ?= deb
DEB_TREE := $(DEB_DIR)/$(PKG)-$(VERSION)

modules:
	$(MAKE) -C $(KDIR) M=$(CURDIR) modules

clean:
	$(MAKE) -C $(KDIR) M=$(CURDIR) clean

check:
	tests/run.sh $(KERNELS)

bench:
	bench/run.sh $(if $(filter 1,$(QUICK)),--quick) $(KERNELS)

root:
	@test "$$(id -u)" = 0 || { \
		echo "make $(MAKECMDGOALS) needs root: sudo make $(MAKECMDGOALS)" >&2; \
		exit 1; }

# The DKMS source tree and the check command, under DESTDIR (used by install
# and by the package).
install-files:
	rm -rf $(DESTDIR)$(SRC_DIR)
	install -D -m 0644 -t $(DESTDIR)$(SRC_DIR) Kbuild Makefile dkms.conf
	install -D -m 0644 -t $(DESTDIR)$(SRC_DIR)/src src/*.c src/*.h
	install -D -m 0755 tools/$(CHECK) $(DESTDIR)$(SBINDIR)/$(CHECK)
	install -D -m 0644 tools/$(CHECK).8 $(DESTDIR)$(MANDIR)/man8/$(CHECK).8

install: root install-files
	dkms status -m $(PKG) -v $(VERSION) | grep -q . || \
		dkms add -m $(PKG) -v $(VERSION)
	dkms install --force -m $(PKG) -v $(VERSION) -k $(KVER)
	install -D -m 0644 udev/90-kvm-lapic-pin.rules $(RULES)
	install -D -m 0644 udev/kvm-lapic-pin.conf $(MODPROBE_CONF)
	if udevadm control --ping 2>/dev/null; then udevadm control --reload; fi
	if [ "$(KVER)" = "$$(uname -r)" ] && [ -d /sys/module/kvm ]; then \
		modprobe kvm_lapic_pin && \
		echo "kvm_lapic_pin: enabled=$$(cat /sys/module/kvm_lapic_pin/parameters/enabled) attached=$$(cat /sys/module/kvm_lapic_pin/status/attached)"; \
	fi

uninstall: root
	if [ -d /sys/module/kvm_lapic_pin ]; then modprobe -r kvm_lapic_pin; fi
	for v in $$(dkms status -m $(PKG) | sed -n 's|^$(PKG)[/,] *\([^,:]*\).*|\1|p' | sort -u); do \
		dkms remove -m $(PKG) -v $$v --all || exit 1; \
	done
	rm -rf /usr/src/$(PKG)-*
	rm -f $(RULES) $(MODPROBE_CONF) $(SBINDIR)/$(CHECK) $(MANDIR)/man8/$(CHECK).8
	if udevadm control --ping 2>/dev/null; then udevadm control --reload; fi

# dpkg-buildpackage writes next to the tree it builds: build a copy in
# $(DEB_DIR), so that the results land there.
deb:
	rm -rf $(DEB_TREE)
	mkdir -p $(DEB_TREE)/src
	cp -r Kbuild Makefile dkms.conf README.md debian tools udev $(DEB_TREE)/
	cp src/*.c src/*.h $(DEB_TREE)/src/
	cd $(DEB_TREE) && dpkg-buildpackage -us -uc -b
	rm -rf $(DEB_TREE)

sign: root
	@test -f $(MOK).key && test -f $(MOK).pub || { \
		echo "no DKMS MOK key at $(MOK).key and $(MOK).pub" >&2; exit 1; }
	$(KDIR)/scripts/sign-file sha256 $(MOK).key $(MOK).pub kvm_lapic_pin.ko

.PHONY: modules clean check bench root install-files install uninstall deb sign
