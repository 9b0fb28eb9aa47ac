/* A check of insn_count's exactness: between two markers, a loop of exactly 3 instructions per
 * iteration runs N times, so the counts for two values of N must differ by exactly 3 * dN.
 * Built for aarch64 by bench/arm64.py (aarch64-linux-gnu-gcc -static) and run under qemu-aarch64. */
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

static void marker(long label) { syscall(141 /* getpriority */, 0L, 0x58E0000L, label); }

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000;
    marker(1);
    __asm__ volatile(
        "mov x9, %0\n"
        "1: subs x9, x9, #1\n"
        "add x10, x10, #1\n"
        "b.ne 1b\n"
        :
        : "r"(n)
        : "x9", "x10", "cc");
    marker(2);
    return 0;
}
