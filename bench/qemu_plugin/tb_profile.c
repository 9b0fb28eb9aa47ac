/*
 * tb_profile: a QEMU TCG plugin for bench/cycles.py. It counts what insn_count.c counts (and
 * writes the same records, so bench/arm64.py's parser reads it), and besides:
 *
 *  - every distinct translation block (TB: start address + instruction bytes) gets an id, a
 *    `def` record with its bytes, and an inline execution counter; at each dump marker the
 *    executions since the previous dump are written per block (`bx` records);
 *  - every guest load and store goes, through a memory callback, into an LRU set-associative,
 *    write-back, write-allocate cache hierarchy (64-byte lines; levels non-inclusive: a dirty
 *    victim is written into the next level, allocating there without a fetch; the last level's
 *    dirty victims go to DRAM). DRAM lines (fetches and write-backs) are attributed to the block
 *    whose access caused them. Exact, not sampled. The caches see guest virtual addresses.
 *    The simulation starts at the marker labelled `from` (default 20: the model is loaded), so
 *    the first invocation warms the caches before the steady ones. One simulated hierarchy, not
 *    thread-safe: the programs profiled run their inference on one thread.
 *
 * Written against QEMU's documented plugin API (docs/devel/tcg-plugins.rst), version 1 (QEMU
 * 4.2 to 8.2, Debian bookworm's qemu-user 7.2 among them). QEMU installs no header for it here,
 * so the declarations used are written out below from the documentation.
 *
 * Markers (as in insn_count.c): the guest calls getpriority (aarch64 syscall 141) with `who` =
 * MAGIC + op and the label in the third argument. op 0 records totals, op 1 also dumps.
 *
 * Arguments: out=PATH (required); caches=SIZE:WAYS[/SIZE:WAYS...] innermost first (qemu splits
 * plugin arguments at commas; default 32768:2/1048576:16, a Raspberry Pi 4's Cortex-A72);
 * from=LABEL (default 20).
 * Records, one per line:
 *   def ID VADDR_HEX N_INSNS BYTES_HEX       a new distinct block (when first translated)
 *   mark LABEL TOTAL_INSNS
 *   mem LABEL ACCESSES MISSES_L1 [MISSES_L2 ...] DRAM_READ_LINES DRAM_WRITE_LINES   (totals)
 *   dump LABEL   then   tb VADDR_HEX INSNS   and   bx ID EXECS DRAM_LINES ACCESSES   (deltas)
 *   exit TOTAL_INSNS
 *
 * Build: gcc -shared -fPIC -O2 -o tb_profile.so tb_profile.c
 * The cache simulator alone (for tests, through ctypes):
 *        gcc -shared -fPIC -O2 -DCACHESIM_ONLY -o cachesim.so tb_profile.c
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the cache simulator ---------------------------------------------------------------- */
#define LINE_BITS 6
#define MAX_LEVELS 4

typedef struct {
    uint64_t *tags;   /* per set, most recently used first; (line + 1) << 1 | dirty, 0 = empty */
    uint32_t sets, ways;
    uint64_t misses;
} Level;

static Level levels[MAX_LEVELS];
static int n_levels;
static uint64_t accesses, dram_reads, dram_writes;
static uint64_t *charge; /* the current block's DRAM line counter, or NULL */

static void dram(uint64_t *counter) {
    (*counter)++;
    if (charge) (*charge)++;
}

/* Looks `line` up in level k; on a hit it becomes the set's most recent entry. Returns the way
 * it now sits in (0) or -1 on a miss (then nothing changed). */
static int lookup(Level *level, uint64_t line, int write) {
    uint64_t *set = level->tags + (line % level->sets) * level->ways;
    uint64_t key = (line + 1) << 1;
    for (uint32_t i = 0; i < level->ways; i++) {
        if ((set[i] & ~1ULL) == key) {
            uint64_t entry = set[i] | (uint64_t)(write != 0);
            memmove(set + 1, set, i * sizeof(uint64_t));
            set[0] = entry;
            return 0;
        }
    }
    return -1;
}

static void install(int k, uint64_t line, int dirty);

/* Puts `line` at the front of its set in level k, evicting the least recent entry (a dirty one
 * is written into level k + 1, or to DRAM from the last level). */
static void insert(int k, uint64_t line, int dirty) {
    Level *level = &levels[k];
    uint64_t *set = level->tags + (line % level->sets) * level->ways;
    uint64_t victim = set[level->ways - 1];
    memmove(set + 1, set, (level->ways - 1) * sizeof(uint64_t));
    set[0] = ((line + 1) << 1) | (uint64_t)(dirty != 0);
    if (victim & 1) {
        if (k + 1 < n_levels) install(k + 1, (victim >> 1) - 1, 1);
        else dram(&dram_writes);
    }
}

/* A write-back from the level above: the whole line, so a miss allocates without a fetch. */
static void install(int k, uint64_t line, int dirty) {
    if (lookup(&levels[k], line, dirty) < 0) insert(k, line, dirty);
}

/* A demand access of one line from the core (or a fetch from the level above). */
static void access_line(int k, uint64_t line, int write) {
    if (lookup(&levels[k], line, write) >= 0) return;
    levels[k].misses++;
    if (k + 1 < n_levels) access_line(k + 1, line, 0);
    else dram(&dram_reads);
    insert(k, line, write);
}

static void cache_access(uint64_t addr, unsigned size, int write) {
    uint64_t first = addr >> LINE_BITS, last = (addr + (size ? size : 1) - 1) >> LINE_BITS;
    accesses++;
    for (uint64_t line = first; line <= last; line++) access_line(0, line, write);
}

/* "SIZE:WAYS/SIZE:WAYS/..." (or commas) -> levels. Returns 0, or -1 on a malformed or impossible spec. */
static int cache_init(const char *spec) {
    for (int k = 0; k < n_levels; k++) free(levels[k].tags);
    n_levels = 0;
    accesses = dram_reads = dram_writes = 0;
    const char *p = spec;
    while (*p) {
        char *end;
        unsigned long long size = strtoull(p, &end, 10);
        if (*end != ':' || n_levels == MAX_LEVELS) return -1;
        unsigned long long ways = strtoull(end + 1, &end, 10);
        if (ways == 0 || size % (ways << LINE_BITS) != 0) return -1;
        Level *level = &levels[n_levels++];
        level->ways = (uint32_t)ways;
        level->sets = (uint32_t)(size / (ways << LINE_BITS));
        level->misses = 0;
        level->tags = calloc((size_t)level->sets * ways, sizeof(uint64_t));
        if (!level->tags) return -1;
        if (*end == '/' || *end == ',') end++;
        else if (*end) return -1;
        p = end;
    }
    return n_levels ? 0 : -1;
}

#ifdef CACHESIM_ONLY
/* ---- a small C ABI for the tests ------------------------------------------------------------ */
int cs_init(const char *spec) { charge = NULL; return cache_init(spec); }
void cs_access(uint64_t addr, unsigned size, int write) { cache_access(addr, size, write); }
/* out: accesses, misses of each level, DRAM read lines, DRAM write lines; returns the count */
int cs_stats(uint64_t *out) {
    int n = 0;
    out[n++] = accesses;
    for (int k = 0; k < n_levels; k++) out[n++] = levels[k].misses;
    out[n++] = dram_reads;
    out[n++] = dram_writes;
    return n;
}
#else

/* ---- the documented API, version 1 ---------------------------------------------------- */
typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t; /* not read here */
typedef uint32_t qemu_plugin_meminfo_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 = 0 };
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS = 0 };
enum qemu_plugin_mem_rw { QEMU_PLUGIN_MEM_R = 1, QEMU_PLUGIN_MEM_W = 2, QEMU_PLUGIN_MEM_RW = 3 };
typedef void (*tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*syscall_cb_t)(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num,
                             uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4,
                             uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8);
typedef void (*atexit_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*vcpu_mem_cb_t)(unsigned int vcpu_index, qemu_plugin_meminfo_t info,
                              uint64_t vaddr, void *userdata);

extern void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb_t cb);
extern void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb,
                                                     enum qemu_plugin_op op, void *ptr,
                                                     uint64_t imm);
extern void qemu_plugin_register_vcpu_mem_cb(struct qemu_plugin_insn *insn, vcpu_mem_cb_t cb,
                                             enum qemu_plugin_cb_flags flags,
                                             enum qemu_plugin_mem_rw rw, void *userdata);
extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
extern uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
extern struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
extern const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);
extern size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
extern unsigned int qemu_plugin_mem_size_shift(qemu_plugin_meminfo_t info);
extern _Bool qemu_plugin_mem_is_store(qemu_plugin_meminfo_t info);
extern void qemu_plugin_register_vcpu_syscall_cb(qemu_plugin_id_t id, syscall_cb_t cb);
extern void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, atexit_cb_t cb, void *userdata);
extern void qemu_plugin_outs(const char *string);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

/* ---- blocks ---------------------------------------------------------------------------- */
#define SYS_GETPRIORITY_AARCH64 141
#define MARKER_MAGIC 0x58E0000ULL /* above any pid (pid_max <= 2^22) */
#define OP_MARK 0
#define OP_DUMP 1
#define HASH_BITS 20
#define MAX_BLOCK_BYTES 4096

typedef struct Block {
    uint64_t vaddr, key;
    uint32_t id, n_insns, n_bytes;
    uint64_t execs;                      /* inline add target: never moves (malloc'ed alone) */
    uint64_t dram_lines, accesses;       /* from the memory callback */
    uint64_t dumped_execs, dumped_dram, dumped_accesses;
    struct Block *next;                  /* hash chain */
    uint8_t bytes[];
} Block;

static Block **table;
static Block **blocks; /* by id */
static uint32_t n_blocks, cap_blocks;
static uint64_t total;
static int active;
static uint64_t start_label = 20;
static FILE *out;

static uint64_t fnv(const uint8_t *data, size_t n, uint64_t h) {
    for (size_t i = 0; i < n; i++) h = (h ^ data[i]) * 0x100000001B3ULL;
    return h;
}

static Block *block_for(uint64_t vaddr, uint32_t n_insns, const uint8_t *bytes, uint32_t n_bytes) {
    uint64_t key = fnv(bytes, n_bytes, 0xCBF29CE484222325ULL ^ vaddr ^ ((uint64_t)n_insns << 48));
    Block **head = &table[(key * 0x9E3779B97F4A7C15ULL) >> (64 - HASH_BITS)];
    for (Block *b = *head; b; b = b->next)
        if (b->key == key && b->vaddr == vaddr && b->n_bytes == n_bytes && !memcmp(b->bytes, bytes, n_bytes))
            return b;
    if (n_blocks == cap_blocks) {
        uint32_t cap = cap_blocks ? 2 * cap_blocks : 65536;
        Block **grown = realloc(blocks, cap * sizeof(Block *));
        if (!grown) return NULL;
        blocks = grown;
        cap_blocks = cap;
    }
    Block *b = calloc(1, sizeof(Block) + n_bytes);
    if (!b) return NULL;
    b->vaddr = vaddr;
    b->key = key;
    b->id = n_blocks;
    b->n_insns = n_insns;
    b->n_bytes = n_bytes;
    memcpy(b->bytes, bytes, n_bytes);
    b->next = *head;
    *head = b;
    blocks[n_blocks++] = b;
    fprintf(out, "def %u %llx %u ", b->id, (unsigned long long)vaddr, n_insns);
    for (uint32_t i = 0; i < n_bytes; i++) fprintf(out, "%02x", bytes[i]);
    fputc('\n', out);
    return b;
}

static void on_mem(unsigned int vcpu_index, qemu_plugin_meminfo_t info, uint64_t vaddr, void *userdata) {
    (void)vcpu_index;
    if (!active) return;
    Block *b = userdata;
    b->accesses++;
    charge = &b->dram_lines;
    cache_access(vaddr, 1u << qemu_plugin_mem_size_shift(info), qemu_plugin_mem_is_store(info));
    charge = NULL;
}

static void on_tb_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    uint8_t bytes[MAX_BLOCK_BYTES];
    uint32_t n_bytes = 0;
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        size_t size = qemu_plugin_insn_size(insn);
        if (n_bytes + size > sizeof(bytes)) break;
        memcpy(bytes + n_bytes, qemu_plugin_insn_data(insn), size);
        n_bytes += (uint32_t)size;
    }
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &total, n);
    Block *b = block_for(qemu_plugin_tb_vaddr(tb), (uint32_t)n, bytes, n_bytes);
    if (!b) {
        qemu_plugin_outs("tb_profile: out of memory for blocks; per-block records incomplete\n");
        return;
    }
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->execs, 1);
    for (size_t i = 0; i < n; i++)
        qemu_plugin_register_vcpu_mem_cb(qemu_plugin_tb_get_insn(tb, i), on_mem, QEMU_PLUGIN_CB_NO_REGS,
                                         QEMU_PLUGIN_MEM_RW, b);
}

typedef struct { uint64_t vaddr, insns; } TbCount;

static int by_vaddr(const void *a, const void *b) {
    uint64_t x = ((const TbCount *)a)->vaddr, y = ((const TbCount *)b)->vaddr;
    return x < y ? -1 : x > y;
}

static void dump(uint64_t label) {
    fprintf(out, "dump %llu\n", (unsigned long long)label);
    TbCount *counts = malloc((n_blocks + 1) * sizeof(TbCount));
    uint32_t n = 0;
    for (uint32_t i = 0; i < n_blocks; i++) {
        Block *b = blocks[i];
        uint64_t execs = b->execs - b->dumped_execs;
        uint64_t lines = b->dram_lines - b->dumped_dram, acc = b->accesses - b->dumped_accesses;
        if (!execs && !lines && !acc) continue;
        fprintf(out, "bx %u %llu %llu %llu\n", b->id, (unsigned long long)execs,
                (unsigned long long)lines, (unsigned long long)acc);
        b->dumped_execs = b->execs;
        b->dumped_dram = b->dram_lines;
        b->dumped_accesses = b->accesses;
        if (counts && execs) counts[n++] = (TbCount){b->vaddr, execs * b->n_insns};
    }
    if (!counts) return;
    /* insn_count's `tb` records: instructions per start address (blocks sharing one summed) */
    qsort(counts, n, sizeof(TbCount), by_vaddr);
    for (uint32_t i = 0; i < n;) {
        uint64_t vaddr = counts[i].vaddr, insns = 0;
        for (; i < n && counts[i].vaddr == vaddr; i++) insns += counts[i].insns;
        fprintf(out, "tb %llx %llu\n", (unsigned long long)vaddr, (unsigned long long)insns);
    }
    free(counts);
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                       uint64_t a7, uint64_t a8) {
    (void)id; (void)vcpu_index; (void)a1; (void)a4; (void)a5; (void)a6; (void)a7; (void)a8;
    if (num != SYS_GETPRIORITY_AARCH64 || (a2 != MARKER_MAGIC + OP_MARK && a2 != MARKER_MAGIC + OP_DUMP))
        return;
    if (a3 == start_label) active = 1;
    fprintf(out, "mark %llu %llu\n", (unsigned long long)a3, (unsigned long long)total);
    fprintf(out, "mem %llu %llu", (unsigned long long)a3, (unsigned long long)accesses);
    for (int k = 0; k < n_levels; k++) fprintf(out, " %llu", (unsigned long long)levels[k].misses);
    fprintf(out, " %llu %llu\n", (unsigned long long)dram_reads, (unsigned long long)dram_writes);
    if (a2 == MARKER_MAGIC + OP_DUMP) dump(a3);
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
    const char *path = NULL, *caches = "32768:2/1048576:16";
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) path = argv[i] + 4;
        else if (strncmp(argv[i], "caches=", 7) == 0) caches = argv[i] + 7;
        else if (strncmp(argv[i], "from=", 5) == 0) start_label = strtoull(argv[i] + 5, NULL, 10);
    }
    if (!path) {
        qemu_plugin_outs("tb_profile: needs out=PATH\n");
        return -1;
    }
    if (cache_init(caches) != 0) {
        qemu_plugin_outs("tb_profile: caches= wants SIZE:WAYS[/SIZE:WAYS...] (64-byte lines)\n");
        return -1;
    }
    out = fopen(path, "w");
    table = calloc(1ULL << HASH_BITS, sizeof(Block *));
    if (!out || !table) {
        qemu_plugin_outs("tb_profile: cannot open out= file or allocate\n");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb_translate);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, on_exit_cb, NULL);
    return 0;
}
#endif
