/* stp_insncount.c - exact guest instruction counts for QEMU 7.2 TCG (plugin API v1, no glib).
 *
 * Arguments: begin=ADDR,end=ADDR (optional) - addresses of the frame marker functions;
 *            range=LO-HI (up to 8, optional) - also count the instructions with LO <= pc < HI.
 * Every executed instruction adds 1 to an inline counter. At each execution of the first
 * instruction at `begin` the counter is latched; at `end` the difference is recorded as one
 * frame. So a frame counts everything run between the two marker calls, callees included.
 * Output (through qemu's plugin log: -d plugin -D FILE), one line each:
 *   stp_insncount total=N
 *   stp_insncount frame=N          (one line per begin/end pair, in order)
 *   stp_insncount range=N          (instructions inside any of the ranges, whole run)
 * Build: gcc -shared -fPIC -O2 -I<dir of qemu-plugin.h> stp_insncount.c -o stp_insncount.so
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

enum { MAX_FRAMES = 1 << 16, MAX_RANGES = 8 };

static uint64_t total, in_ranges;
static uint64_t range_lo[MAX_RANGES], range_hi[MAX_RANGES];
static int n_ranges;
static uint64_t begin_addr = UINT64_MAX, end_addr = UINT64_MAX;
static uint64_t latched;
static uint64_t frames[MAX_FRAMES];
static size_t n_frames, n_dropped;

static void on_begin(unsigned int vcpu, void *udata)
{
    (void)vcpu; (void)udata;
    latched = total;
}

static void on_end(unsigned int vcpu, void *udata)
{
    (void)vcpu; (void)udata;
    if (n_frames < MAX_FRAMES)
        frames[n_frames++] = total - latched;
    else
        n_dropped++;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint64_t pc = qemu_plugin_insn_vaddr(insn);
        /* the marker callbacks are registered before the inline add, and the same order is
           used at both markers, so a frame is exactly the instructions in between */
        if (pc == begin_addr)
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_begin, QEMU_PLUGIN_CB_NO_REGS, NULL);
        if (pc == end_addr)
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_end, QEMU_PLUGIN_CB_NO_REGS, NULL);
        qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &total, 1);
        for (int r = 0; r < n_ranges; r++)
            if (pc >= range_lo[r] && pc < range_hi[r]) {
                qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &in_ranges, 1);
                break;
            }
    }
}

static void at_plugin_exit(qemu_plugin_id_t id, void *p)
{
    (void)id; (void)p;
    char line[96];
    snprintf(line, sizeof line, "stp_insncount total=%" PRIu64 "\n", total);
    qemu_plugin_outs(line);
    if (n_ranges) {
        snprintf(line, sizeof line, "stp_insncount range=%" PRIu64 "\n", in_ranges);
        qemu_plugin_outs(line);
    }
    for (size_t i = 0; i < n_frames; i++) {
        snprintf(line, sizeof line, "stp_insncount frame=%" PRIu64 "\n", frames[i]);
        qemu_plugin_outs(line);
    }
    if (n_dropped) {
        snprintf(line, sizeof line, "stp_insncount dropped=%zu\n", n_dropped);
        qemu_plugin_outs(line);
    }
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (!strncmp(argv[i], "begin=", 6))
            begin_addr = strtoull(argv[i] + 6, NULL, 0);
        else if (!strncmp(argv[i], "end=", 4))
            end_addr = strtoull(argv[i] + 4, NULL, 0);
        else if (!strncmp(argv[i], "range=", 6) && n_ranges < MAX_RANGES) {
            char *dash;
            range_lo[n_ranges] = strtoull(argv[i] + 6, &dash, 0);
            if (*dash != '-') {
                fprintf(stderr, "stp_insncount: range=LO-HI expected, got %s\n", argv[i]);
                return -1;
            }
            range_hi[n_ranges++] = strtoull(dash + 1, NULL, 0);
        }
        else {
            fprintf(stderr, "stp_insncount: unknown argument %s\n", argv[i]);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, at_plugin_exit, NULL);
    return 0;
}
