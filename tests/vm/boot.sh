#!/bin/bash
# Boot a kernel fetched by tests/kernels.sh in QEMU (TCG; the emulated CPU
# has SVM, so KVM works inside the guest) and judge the run by its console.
#
#   tests/vm/boot.sh --kernel NAME --initrd FILE --log FILE [--timeout SECS]
#                    [--append "CMDLINE"] [--smp N] [--tcg multi|single]
#                    [--icount SHIFT]
#
# The console goes to stdout and to the log. Exit status: 0 if the log has
# "VM-EXIT 0" (see tests/vm/init), 1 if not, 124 if the VM was still running
# after the timeout (default 300 s) and was killed.
#
# --tcg single runs all vCPUs in one host thread (default: one thread each).
# It boots as fast, and avoids the rare oops or hang that multi-threaded TCG
# causes when the guest patches kernel text (static keys, kprobes) while
# other vCPUs run it.
#
# --icount SHIFT makes virtual time, and so the guest's TSC, follow the
# instructions executed: 2^SHIFT ns each, idle time skipped (QEMU's -icount
# shift=SHIFT,sleep=off). It needs --tcg single.
set -euo pipefail

VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly VM_DIR

usage() {
    sed -n '2,20s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

main() {
    local name='' initrd='' log='' timeout=300 append='' smp=3 tcg=multi
    local icount=''
    while (($#)); do
        (($# >= 2)) || usage
        case $1 in
        --kernel) name=$2 ;;
        --initrd) initrd=$2 ;;
        --log) log=$2 ;;
        --timeout) timeout=$2 ;;
        --append) append=$2 ;;
        --smp) smp=$2 ;;
        --tcg) tcg=$2 ;;
        --icount) icount=$2 ;;
        *) usage ;;
        esac
        shift 2
    done
    [[ -n $name && -n $initrd && -n $log ]] || usage
    [[ $smp =~ ^[1-9][0-9]*$ && $timeout =~ ^[1-9][0-9]*$ ]] || usage
    [[ $tcg == multi || $tcg == single ]] || usage
    [[ -z $icount || ($icount =~ ^[0-9]+$ && $tcg == single) ]] || usage
    local -a accel=(-accel "tcg,thread=$tcg")
    [[ -z $icount ]] || accel+=(-icount "shift=$icount,sleep=off")

    local VMLINUZ
    eval "$("$VM_DIR/../kernels.sh" info "$name" | grep '^VMLINUZ=')"

    # Every CPU but the boot CPU is nohz_full.
    local cmdline="console=ttyS0 panic=-1 panic_on_warn=1 quiet"
    ((smp < 2)) || cmdline+=" nohz_full=1-$((smp - 1))"

    # A wedged vCPU (see --tcg) is what the timeout is for. +invtsc gives
    # PREEMPT_RT kernels the constant TSC they require before they allow KVM.
    local rc=0
    timeout --kill-after=10 "$timeout" \
        qemu-system-x86_64 \
        "${accel[@]}" \
        -cpu max,+invtsc,x-force-features=on \
        -smp "$smp" -m 1G \
        -nodefaults -nographic -serial stdio -no-reboot \
        -kernel "$VMLINUZ" -initrd "$initrd" \
        -append "$cmdline${append:+ $append}" \
        </dev/null | tee "$log" || rc=$?

    if ((rc == 124 || rc == 137)); then
        echo "VM TIMEOUT after ${timeout}s (console log: $log)" >&2
        exit 124
    elif ((rc != 0)); then
        echo "VM FAILED: qemu exited with $rc (console log: $log)" >&2
        exit 1
    elif ! grep -Eq 'VM-EXIT 0([[:space:]]|$)' "$log"; then
        local verdict
        verdict=$(grep -Eo 'VM-EXIT [0-9]+' "$log" || echo 'no VM-EXIT line')
        echo "VM FAILED: $verdict (console log: $log)" >&2
        exit 1
    fi
}

main "$@"
