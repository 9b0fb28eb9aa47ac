/*
 * insn_count: a QEMU TCG plugin that counts executed guest instructions, exactly and
 * deterministically, with phase markers the guest sets itself.
 *
 * Written against QEMU's documented plugin API (docs/devel/tcg-plugins.rst), version 1, which
 * QEMU 4.2 to 8.2 load (Debian bookworm's qemu-user 7.2 among them). QEMU installs no header
 * for it here, so the few declarations used are written out below from the documentation.
 *
 * Counting: every translation block (TB) gets two inline adds of its instruction count, one to
 * a global total and one to a counter of its own start address. Inline adds are emitted into
 * the translated code, so counting does not depend on timing; a TB is counted whole when it
 * starts (a guest fault inside a TB would over-count; the programs measured here take none).
 *
 * Markers: the guest calls getpriority (aarch64 syscall 141) with `who` = MAGIC + op and the
 * label in the third argument (e.g. through libc's syscall(), whose extra arguments the kernel
 * ignores); getpriority then fails with ESRCH and has no effect. op 0 records the running total
 * under the label; op 1 also writes, for every start address, the instructions executed since
 * the previous op-1 marker (so the host can attribute them to libraries and functions).
 *
 * Arguments: out=PATH (required) is where the records go, one per line:
 *   mark LABEL TOTAL
 *   dump LABEL            followed by   tb VADDR_HEX INSNS
 *   exit TOTAL
 *
 * Build: gcc -shared -fPIC -O2 -o insn_count.so insn_count.c
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the documented API, version 1 ---------------------------------------------------- */
typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t; /* not read here */
struct qemu_plugin_tb;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 = 0 };
typedef void (*tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*syscall_cb_t)(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num,
                             uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4,
                             uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8);
typedef void (*atexit_cb_t)(qemu_plugin_id_t id, void *userdata);

extern void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb_t cb);
extern void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb,
                                                     enum qemu_plugin_op op, void *ptr,
                                                     uint64_t imm);
extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
extern uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
extern void qemu_plugin_register_vcpu_syscall_cb(qemu_plugin_id_t id, syscall_cb_t cb);
extern void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, atexit_cb_t cb, void *userdata);
extern void qemu_plugin_outs(const char *string);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

/* ---- state ---------------------------------------------------------------------------- */
#define SYS_GETPRIORITY_AARCH64 141
#define MARKER_MAGIC 0x58E0000ULL /* above any pid (pid_max <= 2^22) */
#define OP_MARK 0
#define OP_DUMP 1

typedef struct {
    uint64_t vaddr;
    uint64_t insns;   /* executed instructions of TBs starting here (inline add target) */
    uint64_t dumped;  /* `insns` at the previous dump */
} Slot;

#define CHUNK_SLOTS 65536 /* slots live in chunks that never move: inline adds point at them */
#define MAX_CHUNKS 256
#define HASH_BITS 22
static Slot *chunks[MAX_CHUNKS];
static uint32_t n_slots;
static int32_t *table; /* open addressing: vaddr -> slot index + 1 */
static uint64_t total;
static FILE *out;

static Slot *slot_at(uint32_t index) { return &chunks[index / CHUNK_SLOTS][index % CHUNK_SLOTS]; }

static Slot *slot_for(uint64_t vaddr) {
    uint64_t mask = (1ULL << HASH_BITS) - 1;
    uint64_t h = (vaddr * 0x9E3779B97F4A7C15ULL) >> (64 - HASH_BITS);
    for (;; h = (h + 1) & mask) {
        int32_t entry = table[h];
        if (entry == 0) break;
        if (slot_at((uint32_t)(entry - 1))->vaddr == vaddr) return slot_at((uint32_t)(entry - 1));
    }
    if (n_slots >= (uint64_t)CHUNK_SLOTS * MAX_CHUNKS || n_slots >= mask / 2) return NULL;
    if (n_slots % CHUNK_SLOTS == 0) {
        chunks[n_slots / CHUNK_SLOTS] = calloc(CHUNK_SLOTS, sizeof(Slot));
        if (!chunks[n_slots / CHUNK_SLOTS]) return NULL;
    }
    Slot *slot = slot_at(n_slots);
    slot->vaddr = vaddr;
    table[h] = (int32_t)(++n_slots);
    return slot;
}

static void on_tb_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    uint64_t n = qemu_plugin_tb_n_insns(tb);
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &total, n);
    Slot *slot = slot_for(qemu_plugin_tb_vaddr(tb));
    if (slot) {
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &slot->insns, n);
    } else {
        qemu_plugin_outs("insn_count: out of address slots; per-address counts incomplete\n");
    }
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                       uint64_t a7, uint64_t a8) {
    (void)id; (void)vcpu_index; (void)a1; (void)a4; (void)a5; (void)a6; (void)a7; (void)a8;
    if (num != SYS_GETPRIORITY_AARCH64 || (a2 != MARKER_MAGIC + OP_MARK && a2 != MARKER_MAGIC + OP_DUMP))
        return;
    fprintf(out, "mark %llu %llu\n", (unsigned long long)a3, (unsigned long long)total);
    if (a2 == MARKER_MAGIC + OP_DUMP) {
        fprintf(out, "dump %llu\n", (unsigned long long)a3);
        for (uint32_t i = 0; i < n_slots; i++) {
            Slot *slot = slot_at(i);
            if (slot->insns != slot->dumped) {
                fprintf(out, "tb %llx %llu\n", (unsigned long long)slot->vaddr,
                        (unsigned long long)(slot->insns - slot->dumped));
                slot->dumped = slot->insns;
            }
        }
    }
    fflush(out);
}

static void on_exit_cb(qemu_plugin_id_t id, void *userdata) {
    (void)id; (void)userdata;
    fprintf(out, "exit %llu\n", (unsigned long long)total);
    fclose(out);
    out = NULL;
}

__attribute__((visibility("default")))
int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
    (void)info;
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) path = argv[i] + 4;
    }
    if (!path) {
        qemu_plugin_outs("insn_count: needs out=PATH\n");
        return -1;
    }
    out = fopen(path, "w");
    table = calloc(1ULL << HASH_BITS, sizeof(int32_t));
    if (!out || !table) {
        qemu_plugin_outs("insn_count: cannot open out= file or allocate\n");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb_translate);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, on_exit_cb, NULL);
    return 0;
}
