# SPDX-License-Identifier: GPL-2.0
# Builds kvm_lapic_pin.ko for the running kernel, or for another one with
# KERNELRELEASE=<uname -r of it> (or KVER=) or KDIR=<its build directory>.
KVER ?= $(if $(KERNELRELEASE),$(KERNELRELEASE),$(shell uname -r))
KDIR ?= /lib/modules/$(KVER)/build

modules:
	$(MAKE) -C $(KDIR) M=$(CURDIR) modules

clean:
	$(MAKE) -C $(KDIR) M=$(CURDIR) clean

check:
	tests/run.sh $(KERNELS)

.PHONY: modules clean check
