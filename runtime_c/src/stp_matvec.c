/* stp_matvec.c -- the mat-vec kernels: int16 activations, int8 or int16 weights, int32 sums.
 *
 * The compiler proved sum_j |w_ij| * 32768 <= 2^31 - 1 for every row (ir.py validates it), so
 * every partial sum fits int32 in ANY order: an optimised path (e.g. Cortex-M DSP SMLAD under
 * #if defined(__ARM_FEATURE_DSP)) may regroup the products and still give the same bits.
 */
#include <stddef.h>

#include "stp_model.h"

#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
/* Two rows (p0, p1) times 8 inputs (px): 4 SMLAD per row, inputs loaded once (LDM). Shared by
 * the block loop and the pair loop below; operands a0, a1, px, p0, p1; clobbers r8-r12 and lr.
 * Only high registers are clobbered so the operands keep r0-r7: at -O0 with an FPU (the M4F/M7
 * boards' flags) gcc places these asm operands in low registers only and, with r4-r6 clobbered,
 * found "impossible constraints". LDM and SMLAD take high registers at the same length. */
#define STP_DSP_PAIR_8MACS \
    "ldmia %[px]!, {r8, r9, r10, r11}\n\t" \
    "ldmia %[p0]!, {r12, lr}\n\t" \
    "smlad %[a0], r12, r8, %[a0]\n\t" \
    "smlad %[a0], lr, r9, %[a0]\n\t" \
    "ldmia %[p1]!, {r12, lr}\n\t" \
    "smlad %[a1], r12, r8, %[a1]\n\t" \
    "smlad %[a1], lr, r9, %[a1]\n\t" \
    "ldmia %[p0]!, {r12, lr}\n\t" \
    "smlad %[a0], r12, r10, %[a0]\n\t" \
    "smlad %[a0], lr, r11, %[a0]\n\t" \
    "ldmia %[p1]!, {r12, lr}\n\t" \
    "smlad %[a1], r12, r10, %[a1]\n\t" \
    "smlad %[a1], lr, r11, %[a1]\n\t"

/* Two rows times 8 inputs with each row's 8 weights in one LDM of four registers: 8 SMLAD, 3 LDM.
 * Operands a0, a1, px, p0, p1; clobbers r4, r5, r8-r12 and lr. */
#define STP_DSP_PAIR4_8MACS \
    "ldmia %[px]!, {r8, r9, r10, r11}\n\t" \
    "ldmia %[p0]!, {r4, r5, r12, lr}\n\t" \
    "smlad %[a0], r4, r8, %[a0]\n\t" \
    "smlad %[a0], r5, r9, %[a0]\n\t" \
    "smlad %[a0], r12, r10, %[a0]\n\t" \
    "smlad %[a0], lr, r11, %[a0]\n\t" \
    "ldmia %[p1]!, {r4, r5, r12, lr}\n\t" \
    "smlad %[a1], r4, r8, %[a1]\n\t" \
    "smlad %[a1], r5, r9, %[a1]\n\t" \
    "smlad %[a1], r12, r10, %[a1]\n\t" \
    "smlad %[a1], lr, r11, %[a1]\n\t"

#endif

/* w (n,) . x (n,) -> int32.  Counts n mac. */
int32_t stp_dot_s16_s8(const int8_t *w, const int16_t *x, int n)
{
    int32_t acc = 0;
    int j;
    STP_COUNT(mac, n);
#if defined(__ARM_FEATURE_DSP)
    /* Cortex-M DSP path (bit-exact with the loop below, tested on M4 vs M3 under
     * qemu): with word-aligned operands, LDM loads 8 int8 weights and 8 int16 inputs, SXTB16
     * sign-extends the weights in pairs (w0,w2 / w1,w3), PKHBT/PKHTB repack them to (w0,w1)
     * (w2,w3) to match the input pairs, SMLAD adds two products: 8 MACs in 16 instructions.
     * SMLAD wraps modulo 2^32; every partial sum fits int32 (proven), so the result is exact. */
    {
        const int8_t *pw = w, *wend = w + n;
        const int16_t *px = x;
        if ((((uintptr_t)pw | (uintptr_t)px) & 3u) == 0u && n >= 8) {
            const int8_t *end8 = pw + (n & ~7);
            __asm__ volatile(
                "1:\n\t"
                "ldmia %[pw]!, {r4, r5}\n\t"
                "ldmia %[px]!, {r6, r8, r9, r10}\n\t"
                "sxtb16 r11, r4\n\t"
                "sxtb16 r12, r4, ror #8\n\t"
                "pkhbt r4, r11, r12, lsl #16\n\t"
                "pkhtb r11, r12, r11, asr #16\n\t"
                "smlad %[acc], r4, r6, %[acc]\n\t"
                "smlad %[acc], r11, r8, %[acc]\n\t"
                "sxtb16 r11, r5\n\t"
                "sxtb16 r12, r5, ror #8\n\t"
                "pkhbt r5, r11, r12, lsl #16\n\t"
                "pkhtb r11, r12, r11, asr #16\n\t"
                "smlad %[acc], r5, r9, %[acc]\n\t"
                "smlad %[acc], r11, r10, %[acc]\n\t"
                "cmp %[pw], %[end]\n\t"
                "bne 1b\n\t"
                : [acc] "+r"(acc), [pw] "+r"(pw), [px] "+r"(px)
                : [end] "r"(end8)
                : "r4", "r5", "r6", "r8", "r9", "r10", "r11", "r12", "cc", "memory");
        }
        for (; pw != wend; pw++, px++) acc += (int32_t)*pw * *px;
        return acc;
    }
#endif
    for (j = 0; j < n; j++) acc += (int32_t)w[j] * x[j];
    return acc;
}

/* w (n,) . x (n,) -> int32.  Counts n mac. */
int32_t stp_dot_s16_s16(const int16_t *w, const int16_t *x, int n)
{
    int32_t acc = 0;
    int j;
    STP_COUNT(mac, n);
#if defined(__ARM_FEATURE_DSP)
    /* Cortex-M DSP path (bit-exact with the loop below, tested on M4 vs M3 under
     * qemu): SMLAD adds two 16x16 products per instruction. With word-aligned operands LDM
     * loads 8 weights and 8 inputs in 2 instructions: 8 MACs in 8 instructions. Otherwise
     * 32-bit pair loads (unaligned LDR is allowed on ARMv7E-M). SMLAD wraps modulo 2^32;
     * every partial sum fits int32 (proven), so the result is exact in any order. */
    {
        const int16_t *pw = w, *px = x, *wend = w + n;
        if (n > 0 && ((uintptr_t)w & 3u) == 2u && ((uintptr_t)x & 3u) == 2u)
            acc = (int32_t)*pw++ * *px++;        /* one MAC brings both to a word boundary */
        if ((((uintptr_t)pw | (uintptr_t)px) & 3u) == 0u && wend - pw >= 8) {
            const int16_t *end8 = pw + ((wend - pw) & ~7);
            __asm__ volatile(
                "1:\n\t"
                "ldmia %[pw]!, {r4, r5, r6, r8}\n\t"
                "ldmia %[px]!, {r9, r10, r11, r12}\n\t"
                "smlad %[acc], r4, r9, %[acc]\n\t"
                "smlad %[acc], r5, r10, %[acc]\n\t"
                "smlad %[acc], r6, r11, %[acc]\n\t"
                "smlad %[acc], r8, r12, %[acc]\n\t"
                "cmp %[pw], %[end]\n\t"
                "bne 1b\n\t"
                : [acc] "+r"(acc), [pw] "+r"(pw), [px] "+r"(px)
                : [end] "r"(end8)
                : "r4", "r5", "r6", "r8", "r9", "r10", "r11", "r12", "cc", "memory");
        }
        for (; wend - pw >= 2; pw += 2, px += 2) {
            int32_t wp, xp;
            __builtin_memcpy(&wp, pw, 4);
            __builtin_memcpy(&xp, px, 4);
            acc = __smlad(wp, xp, acc);
        }
        if (pw != wend) acc += (int32_t)*pw * *px;
        return acc;
    }
#endif
    for (j = 0; j < n; j++) acc += (int32_t)w[j] * x[j];
    return acc;
}

/* Row `row` of m (row stride m->cols) . x, using the first n columns. */
static int32_t row_dot(const stp_mat_t *m, int row, const int16_t *x, int n)
{
    if (m->w8 != 0) return stp_dot_s16_s8(m->w8 + row * m->cols, x, n);
    return stp_dot_s16_s16(m->w16 + row * m->cols, x, n);
}

/* ---- the per-row requantisation, in 32-bit arithmetic -------------------------------------
 * The compiler proves per row (qgraph.prove_combine32, the 32-bit requantisation rule) that the
 * bounds of the shifted accumulations plus |bias| fit int32, and (the row proof) |acc| <= 2^31 -
 * 2^15; so no sum below overflows and the rows give the reference's int64 bits. */

/* Clamp to [-32768, 32767] without counting: one SSAT where the ISA has it (ARMv7-M and later). */
static inline int32_t row_ssat16(int32_t v)
{
#if defined(__ARM_FEATURE_SAT) && defined(__GNUC__)
    return (int32_t)__builtin_arm_ssat(v, 16);
#else
    return v > INT16_MAX ? INT16_MAX : v < INT16_MIN ? INT16_MIN : v;
#endif
}

/* stp_sat16 of an int32.  Twin: fixedpoint.sat16.  Counts 1 sat. */
static inline int16_t row_sat16(int32_t v)
{
    STP_COUNT(sat, 1);
    return (int16_t)row_ssat16(v);
}

/* stp_shift_round_s64 in int32: s > 0: ((v >> (s - 1)) + 1) >> 1, which equals round half up
 * (v + 2^(s-1)) >> s without the add that could overflow; s <= 0: v * 2^-s (in range by the
 * proof).  Twin: fixedpoint.shift_round.  Counts 1 shift. */
static inline int32_t row_shift_s32(int32_t v, int s)
{
    STP_COUNT(shift, 1);
    if (s > 0) return ((v >> (s - 1)) + 1) >> 1;
    return v * ((int32_t)1 << -s);
}

#if defined(__ARM_FEATURE_DSP) /* the helpers of the DSP row blocks */
/* row_shift_s32 for s >= 1 only (the caller checked): no branch.  Counts 1 shift. */
static inline int32_t row_shift_right_s32(int32_t v, int s)
{
    STP_COUNT(shift, 1);
    return ((v >> (s - 1)) + 1) >> 1;
}

/* 1 when a[k] >= 1 and b[k] >= 1 for k < n (shifts: -16 .. 31), else 0; four shifts per word
 * test: with bytes in -16 .. 31, byte - 1 (and byte - 2, after a borrow, which only a 0 byte
 * makes) has its top bit set exactly when the byte is <= 0 or borrowed into: never misses one. */
static inline int shifts_positive(const int8_t *a, const int8_t *b, int n)
{
    uint32_t any = 0, wa, wb;
    int k = 0;
    for (; k + 4 <= n; k += 4) {
        __builtin_memcpy(&wa, a + k, 4);
        __builtin_memcpy(&wb, b + k, 4);
        any |= (wa - 0x01010101u) | (wb - 0x01010101u);
    }
    for (; k < n; k++) any |= (uint32_t)(a[k] <= 0 || b[k] <= 0) << 7;
    return (any & 0x80808080u) == 0u;
}
#endif

/* pre_i = sat16(shift(W_i x, x_shift_i) + shift(r_i, h_shift_i) + bias_i) in int32 (the rule
 * above).  Counts 2 shift, 2 add, 1 sat. */
static inline int16_t combine(const stp_gate_t *g, int i, int32_t ax, int32_t ar)
{
    STP_COUNT(add, 2);
    return row_sat16(row_shift_s32(ax, g->x_shift[i]) + row_shift_s32(ar, g->h_shift[i]) + g->bias[i]);
}

#if defined(__ARM_FEATURE_DSP)
/* combine for rows i0 .. i0 + count - 1, the sums ax[0 ..], ar[0 ..]: one call per block;
 * `right` (every x_shift and h_shift of the gate >= 1, shifts_positive) takes the branch-free
 * form: 19 instructions a row on the M4 (ARMv7E-M) instead of 33 for the general one. */
__attribute__((noinline)) static void combine_rows(const stp_gate_t *g, int i0, int count, const int32_t *ax,
                                                   const int32_t *ar, int16_t *pre, int right)
{
    const int8_t *xs = g->x_shift + i0, *hs = g->h_shift + i0;
    const int32_t *bias = g->bias + i0;
    int j;
    if (!right) {
        for (j = 0; j < count; j++) pre[i0 + j] = combine(g, i0 + j, ax[j], ar[j]);
        return;
    }
    STP_COUNT(add, 2 * count);
    for (j = 0; j < count; j++)
        pre[i0 + j] = row_sat16(row_shift_right_s32(ax[j], xs[j]) + row_shift_right_s32(ar[j], hs[j]) + bias[j]);
}
#endif

/* z = sat16(shift(acc, s)) in int32 for any acc: for s <= 0 the clamp goes first (sat16(v * 2^k)
 * equals sat16(sat16(v) * 2^k), and |sat16(v)| * 2^16 <= 2^31 fits).  Counts 1 shift, 1 sat. */
static inline int16_t z_row(int32_t acc, int s)
{
    return row_sat16(row_shift_s32(s > 0 ? acc : row_ssat16(acc), s));
}

#if defined(__ARM_FEATURE_DSP)
/* z_k = sat16(shift(B_k h, z_shift_k)) for k = k0 .. k0 + count - 1 from the sums acc[0 ..]. */
static inline void z_rows(const stp_gate_t *g, int k0, int count, const int32_t *acc, int16_t *z)
{
    int j;
    for (j = 0; j < count; j++) z[k0 + j] = z_row(acc[j], g->z_shift[k0 + j]);
}
#endif

/* Readout rows per block (their int32 sums live on the stack). */
#define STP_READOUT_BLOCK 16

#if defined(STP_HOST_SIMD)
/* x86 host builds only (runtime_c/host, never on a microcontroller): stp_host_gate_rows and
 * stp_host_lowrank_z, row-block SSE2/AVX2 kernels that do a prefix of a gate's rows with the same
 * sums; the loops below finish. */
#include "stp_host_matvec.h"
#endif

#if defined(__ARM_FEATURE_DSP)
/* DSP only: rows w + i stride, i = 0 .. rows - 1 (rows even), int16 . x (n,) ->
 * acc (rows,). Rows go in pairs that share each input load: per 8 columns, 5 LDM + 8 SMLAD +
 * loop = 16 MACs in 15 instructions; then SMLAD pairs, then one last column. One call covers a
 * block of row pairs, so the call, the alignment check and the loop bounds are paid once per
 * block, not once per pair (what made short rows, e.g. A z with 16 columns, expensive). Needs the
 * rows and x word aligned (w and x aligned, stride even), else one stp_dot_s16_s16 per row (same
 * sums). SMLAD wraps modulo 2^32; every partial sum fits int32 (proven), so the sums are exact in
 * any order. */
/* Rows w + i stride (i = 0 .. rows - 1, rows even) . x (n,) -> acc (rows,) for rows of any
 * alignment (e.g. the input weights of an odd input count): ARMv7E-M's LDR takes any address,
 * so each weight pair is one (unaligned) LDR. Rows of up to 8 columns keep x's pairs in registers
 * across all rows (one specialisation per n: no loop over columns, no branch per row); longer
 * rows go in pairs that share each load of x. */
static inline __attribute__((always_inline)) void stp_dsp_short_rows_s16(const int16_t *w, int stride, int rows,
                                                                          const int16_t *x, const int n, int32_t *acc)
{
    int32_t xp[4] = {0, 0, 0, 0}, xlast = n & 1 ? x[n - 1] : 0;
    const int32_t *end = acc + rows;
    int j;
    for (j = 0; j + 2 <= n; j += 2) __builtin_memcpy(&xp[j / 2], x + j, 4);
    for (; acc != end; acc++, w += stride) {
        int32_t a = 0, wp;
        for (j = 0; j + 2 <= n; j += 2) {
            __builtin_memcpy(&wp, w + j, 4);
            a = __smlad(wp, xp[j / 2], a);
        }
        if (n & 1) a += (int32_t)w[n - 1] * xlast;
        *acc = a;
    }
}

__attribute__((noinline)) static void stp_dsp_rows_unaligned_s16(const int16_t *w, int stride, int rows,
                                                                 const int16_t *x, int n, int32_t *acc)
{
    int i;
    STP_COUNT(mac, rows * n);
    switch (n) {
    case 1: stp_dsp_short_rows_s16(w, stride, rows, x, 1, acc); return;
    case 2: stp_dsp_short_rows_s16(w, stride, rows, x, 2, acc); return;
    case 3: stp_dsp_short_rows_s16(w, stride, rows, x, 3, acc); return;
    case 4: stp_dsp_short_rows_s16(w, stride, rows, x, 4, acc); return;
    case 5: stp_dsp_short_rows_s16(w, stride, rows, x, 5, acc); return;
    case 6: stp_dsp_short_rows_s16(w, stride, rows, x, 6, acc); return;
    case 7: stp_dsp_short_rows_s16(w, stride, rows, x, 7, acc); return;
    case 8: stp_dsp_short_rows_s16(w, stride, rows, x, 8, acc); return;
    default: break;
    }
    for (i = 0; i + 1 < rows; i += 2, w += 2 * stride) {
        const int16_t *p0 = w, *p1 = w + stride, *px = x, *xend = x + n;
        int32_t a0 = 0, a1 = 0;
        for (; xend - px >= 2; px += 2, p0 += 2, p1 += 2) {
            int32_t xp, wp0, wp1;
            __builtin_memcpy(&xp, px, 4);
            __builtin_memcpy(&wp0, p0, 4);
            __builtin_memcpy(&wp1, p1, 4);
            a0 = __smlad(wp0, xp, a0);
            a1 = __smlad(wp1, xp, a1);
        }
        if (px != xend) {
            a0 += (int32_t)*p0 * *px;
            a1 += (int32_t)*p1 * *px;
        }
        acc[i] = a0;
        acc[i + 1] = a1;
    }
    if (i < rows) {
        const int16_t *px = x, *xend = x + n;
        int32_t a = 0;
        for (; px != xend; px++, w++) a += (int32_t)*w * *px;
        acc[i] = a;
    }
}

__attribute__((noinline)) static void stp_dsp_dot2_s16(const int16_t *w, int stride, int rows, const int16_t *x,
                                                       int n, int32_t *acc)
{
    const int16_t *end8 = x + (n & ~7), *xend = x + n;
    int i;
    if (((((uintptr_t)w) | ((uintptr_t)x)) & 3u) != 0u || (stride & 1) != 0) {
        stp_dsp_rows_unaligned_s16(w, stride, rows, x, n, acc);
        return;
    }
    STP_COUNT(mac, rows * n);
    if ((n & 15) == 0 && n > 0 && rows > 0) {
        /* As below with 16 columns per pass and each row's 8 weights in one LDM (four registers):
         * 16 MACs in 11 instructions, 25 per 32 with the loop's compare (the end, the output
         * pointer, x, the row step and the ends live on the stack: 5 registers for the operands,
         * as gcc -O0 with an FPU allows); the first 16 columns start the sums with SMUAD. */
        const int16_t *p0 = w, *p1 = w + stride, *px;
        const int16_t *xm = x, *xe = x + n;
        const int32_t *outend = acc + rows;
        int32_t *out = acc;
        int32_t a0, a1;
        ptrdiff_t adv = (ptrdiff_t)(stride - n) * 2, sb = (ptrdiff_t)stride * 2; /* bytes */
        __asm__ volatile(
            "2:\n\t"
            "ldr %[px], %[xm]\n\t"
            "ldmia %[px]!, {r8, r9, r10, r11}\n\t"
            "ldmia %[p0]!, {r4, r5, r12, lr}\n\t"
            "smuad %[a0], r4, r8\n\t"
            "smlad %[a0], r5, r9, %[a0]\n\t"
            "smlad %[a0], r12, r10, %[a0]\n\t"
            "smlad %[a0], lr, r11, %[a0]\n\t"
            "ldmia %[p1]!, {r4, r5, r12, lr}\n\t"
            "smuad %[a1], r4, r8\n\t"
            "smlad %[a1], r5, r9, %[a1]\n\t"
            "smlad %[a1], r12, r10, %[a1]\n\t"
            "smlad %[a1], lr, r11, %[a1]\n\t"
            STP_DSP_PAIR4_8MACS
            "ldr r12, %[xem]\n\t"
            "cmp %[px], r12\n\t"
            "beq 3f\n\t"
            "1:\n\t"
            STP_DSP_PAIR4_8MACS
            STP_DSP_PAIR4_8MACS
            "ldr r12, %[xem]\n\t"
            "cmp %[px], r12\n\t"
            "bne 1b\n\t"
            "3:\n\t"
            "ldr r12, %[outm]\n\t"
            "strd %[a0], %[a1], [r12], #8\n\t"
            "str r12, %[outm]\n\t"
            "ldr lr, %[advm]\n\t"
            "add %[p0], %[p1], lr\n\t"
            "ldr lr, %[sbm]\n\t"
            "add %[p1], %[p0], lr\n\t"
            "ldr lr, %[outendm]\n\t"
            "cmp r12, lr\n\t"
            "bne 2b\n\t"
            : [a0] "=&r"(a0), [a1] "=&r"(a1), [px] "=&r"(px), [p0] "+r"(p0), [p1] "+r"(p1), [outm] "+m"(out)
            : [xem] "m"(xe), [xm] "m"(xm), [advm] "m"(adv), [sbm] "m"(sb), [outendm] "m"(outend)
            : "r4", "r5", "r8", "r9", "r10", "r11", "r12", "lr", "cc", "memory");
        return;
    }
    if ((n & 7) == 0 && n > 0 && rows > 0) {
        /* The whole block in one loop: per pair, the first 8 columns start the sums with SMUAD,
         * the rest run the 8-column loop, STRD stores both sums; the pair's set-up and advance
         * are 9 instructions (x, the row step and the end are read from the stack). */
        const int16_t *p0 = w, *p1 = w + stride, *px;
        const int16_t *xm = x;
        const int32_t *outend = acc + rows;
        int32_t *out = acc;
        int32_t a0, a1;
        ptrdiff_t adv = (ptrdiff_t)(stride - n) * 2, sb = (ptrdiff_t)stride * 2;  /* bytes */
        __asm__ volatile(
            "2:\n\t"
            "ldr %[px], %[xm]\n\t"
            "ldmia %[px]!, {r8, r9, r10, r11}\n\t"
            "ldmia %[p0]!, {r12, lr}\n\t"
            "smuad %[a0], r12, r8\n\t"
            "smlad %[a0], lr, r9, %[a0]\n\t"
            "ldmia %[p1]!, {r12, lr}\n\t"
            "smuad %[a1], r12, r8\n\t"
            "smlad %[a1], lr, r9, %[a1]\n\t"
            "ldmia %[p0]!, {r12, lr}\n\t"
            "smlad %[a0], r12, r10, %[a0]\n\t"
            "smlad %[a0], lr, r11, %[a0]\n\t"
            "ldmia %[p1]!, {r12, lr}\n\t"
            "smlad %[a1], r12, r10, %[a1]\n\t"
            "smlad %[a1], lr, r11, %[a1]\n\t"
            "cmp %[px], %[end]\n\t"
            "beq 3f\n\t"
            "1:\n\t"
            STP_DSP_PAIR_8MACS
            "cmp %[px], %[end]\n\t"
            "bne 1b\n\t"
            "3:\n\t"
            "strd %[a0], %[a1], [%[out]], #8\n\t"
            "ldr r12, %[advm]\n\t"
            "add %[p0], %[p1], r12\n\t"
            "ldr r12, %[sbm]\n\t"
            "add %[p1], %[p0], r12\n\t"
            "ldr r12, %[outendm]\n\t"
            "cmp %[out], r12\n\t"
            "bne 2b\n\t"
            : [a0] "=&r"(a0), [a1] "=&r"(a1), [px] "=&r"(px), [p0] "+r"(p0), [p1] "+r"(p1), [out] "+r"(out)
            : [end] "r"(x + n), [xm] "m"(xm), [advm] "m"(adv), [sbm] "m"(sb), [outendm] "m"(outend)
            : "r8", "r9", "r10", "r11", "r12", "lr", "cc", "memory");
        return;
    }
    for (i = 0; i < rows; i += 2, w += 2 * stride) {
        const int16_t *p0 = w, *p1 = w + stride, *px = x;
        int32_t a0 = 0, a1 = 0;
        if (px != end8) {
            __asm__ volatile(
                "1:\n\t"
                STP_DSP_PAIR_8MACS
                "cmp %[px], %[end]\n\t"
                "bne 1b\n\t"
                : [a0] "+r"(a0), [a1] "+r"(a1), [px] "+r"(px), [p0] "+r"(p0), [p1] "+r"(p1)
                : [end] "r"(end8)
                : "r8", "r9", "r10", "r11", "r12", "lr", "cc", "memory");
        }
        for (; xend - px >= 2; px += 2, p0 += 2, p1 += 2) {
            int32_t xp, wp0, wp1;
            __builtin_memcpy(&xp, px, 4);
            __builtin_memcpy(&wp0, p0, 4);
            __builtin_memcpy(&wp1, p1, 4);
            a0 = __smlad(wp0, xp, a0);
            a1 = __smlad(wp1, xp, a1);
        }
        if (px != xend) {
            a0 += (int32_t)*p0 * *px;
            a1 += (int32_t)*p1 * *px;
        }
        acc[i] = a0;
        acc[i + 1] = a1;
    }
}

/* Rows per stp_dsp_dot2_s16 call in the gates (even; int32 sums of a block live on the stack). */
#define STP_DSP_BLOCK 16

/* ---- int8 weights at (nearly) the speed of int16, with the weights in their natural order ----
 * SXTB16 of a word of 4 int8 weights gives the pair (w0, w2), SXTB16 ror 8 gives (w1, w3). Instead
 * of repacking every weight word to (w0, w1) (w2, w3) (two PKH per word and row), x is repacked
 * once per call to the matching pairs (x0, x2) (x1, x3): SMLAD then adds w0 x0 + w2 x2 and
 * w1 x1 + w3 x3, the same products as the portable loop, and every partial sum fits int32 (the row
 * proof), so the sums are the same bits in any order. The weight arrays are unchanged. */

/* Repacked columns the kernel keeps on its own stack when the caller has none ready (a multiple of
 * 8), and the most the gates repack once per call for h / z (hidden sizes up to 256) and for x. */
#define STP_DSP_S8_LOCAL 64
#define STP_DSP_S8_H 256
#define STP_DSP_S8_X 64

/* x (n,), n a multiple of 4 -> xp (n / 2,): per group of 4, (x0 | x2 << 16), (x1 | x3 << 16). */
static inline void stp_dsp_pair_x(const int16_t *x, int n, int32_t *xp)
{
    int j;
    for (j = 0; j < n; j += 4, xp += 2) {
        uint32_t a, b;
        __builtin_memcpy(&a, x + j, 4);
        __builtin_memcpy(&b, x + j + 2, 4);
        xp[0] = (int32_t)((a & 0xffffu) | (b << 16));     /* PKHBT */
        xp[1] = (int32_t)((b & 0xffff0000u) | (a >> 16)); /* PKHTB */
    }
}

/* The repacked pairs of x's first n & ~7 columns in buf (`cap` columns), once per gate call, for
 * int8 rows of at least 8 columns; NULL otherwise (the kernel then repacks per call, or the rows
 * are short). */
__attribute__((noinline)) static const int32_t *stp_dsp_prepare_s8(const stp_mat_t *m, const int16_t *x, int n,
                                                                   int32_t *buf, int cap)
{
    if (m->w8 == 0 || n < 8 || (n & ~7) > cap) return 0;
    stp_dsp_pair_x(x, n & ~7, buf);
    return buf;
}

/* 8 columns of two int8 rows: the repacked x pairs (LDM), each row's 8 weights (LDM), 4 SXTB16 +
 * 4 SMLAD per row: 16 MACs in 19 instructions. Operands a0, a1, px, p0, p1, t; clobbers r8-r12, lr. */
#define STP_DSP_S8_PAIR_8MACS \
    "ldmia %[px]!, {r8, r9, r10, r11}\n\t" \
    "ldmia %[p0]!, {r12, lr}\n\t" \
    "sxtb16 %[t], r12\n\t" \
    "smlad %[a0], %[t], r8, %[a0]\n\t" \
    "sxtb16 r12, r12, ror #8\n\t" \
    "smlad %[a0], r12, r9, %[a0]\n\t" \
    "sxtb16 %[t], lr\n\t" \
    "smlad %[a0], %[t], r10, %[a0]\n\t" \
    "sxtb16 lr, lr, ror #8\n\t" \
    "smlad %[a0], lr, r11, %[a0]\n\t" \
    "ldmia %[p1]!, {r12, lr}\n\t" \
    "sxtb16 %[t], r12\n\t" \
    "smlad %[a1], %[t], r8, %[a1]\n\t" \
    "sxtb16 r12, r12, ror #8\n\t" \
    "smlad %[a1], r12, r9, %[a1]\n\t" \
    "sxtb16 %[t], lr\n\t" \
    "smlad %[a1], %[t], r10, %[a1]\n\t" \
    "sxtb16 lr, lr, ror #8\n\t" \
    "smlad %[a1], lr, r11, %[a1]\n\t"

/* The whole block in one loop, for word-aligned rows with n a multiple of 8 and x's pairs ready:
 * per pair, 16 columns per pass (an odd 8 enter the pass in its middle), STRD stores both sums,
 * and the pair's set-up and advance are 15 instructions (the output pointer, x, the row step and
 * the ends live on the stack: 7 registers for the operands, as gcc -O0 with an FPU allows). */
static void stp_dsp_block_s8(const int8_t *w, int stride, int rows, const int32_t *xp, int n, int32_t *acc)
{
    const int8_t *p0 = w, *p1 = w + stride;
    const int32_t *xm = xp, *outend = acc + rows;
    int32_t *out = acc;
    int32_t a0, a1, t, odd = n & 8;
    const int32_t *px;
    ptrdiff_t adv = (ptrdiff_t)stride - n, sb = stride; /* bytes */
    __asm__ volatile(
        "2:\n\t"
        "ldr %[px], %[xm]\n\t"
        "movs %[a0], #0\n\t"
        "movs %[a1], #0\n\t"
        "ldr r12, %[oddm]\n\t"
        "cmp r12, #0\n\t"
        "bne 4f\n\t"
        "1:\n\t"
        STP_DSP_S8_PAIR_8MACS
        "4:\n\t"
        STP_DSP_S8_PAIR_8MACS
        "cmp %[px], %[end]\n\t"
        "bne 1b\n\t"
        "ldr r12, %[outm]\n\t"
        "strd %[a0], %[a1], [r12], #8\n\t"
        "str r12, %[outm]\n\t"
        "ldr lr, %[advm]\n\t"
        "add %[p0], %[p1], lr\n\t"
        "ldr lr, %[sbm]\n\t"
        "add %[p1], %[p0], lr\n\t"
        "ldr lr, %[outendm]\n\t"
        "cmp r12, lr\n\t"
        "bne 2b\n\t"
        : [a0] "=&r"(a0), [a1] "=&r"(a1), [px] "=&r"(px), [p0] "+r"(p0), [p1] "+r"(p1), [t] "=&r"(t),
          [outm] "+m"(out)
        : [end] "r"(xp + n / 2), [xm] "m"(xm), [advm] "m"(adv), [sbm] "m"(sb), [outendm] "m"(outend),
          [oddm] "m"(odd)
        : "r8", "r9", "r10", "r11", "r12", "lr", "cc", "memory");
}

/* DSP only: rows w + i stride (i = 0 .. rows - 1, rows even, any alignment: LDR takes any
 * address) int8 . x (n >= 8,) -> acc (rows,); ready: the repacked pairs of x's first n & ~7
 * columns, or NULL (then repacked here, STP_DSP_S8_LOCAL columns at a time). Per row pair and 8
 * columns: 1 LDM of the pairs, per row 1 LDM (word-aligned rows; else 2 LDR) + 4 SXTB16 + 4 SMLAD,
 * and the loop: 16 MACs in 21 (23) instructions. The last n % 8 columns go one by one. SMLAD wraps
 * modulo 2^32; every partial sum fits int32 (proven), so the sums are exact in any order. */
__attribute__((noinline)) static void stp_dsp_dot2_s8(const int8_t *w, int stride, int rows, const int16_t *x,
                                                      int n, const int32_t *ready, int32_t *acc)
{
    int32_t local[STP_DSP_S8_LOCAL / 2];
    int i, c0 = 0, len, n8 = n & ~7, j, aligned = ((((uintptr_t)w) | (uintptr_t)stride) & 3u) == 0u;
    STP_COUNT(mac, rows * n);
    if (ready != 0 && aligned && n8 == n && rows > 0) {
        stp_dsp_block_s8(w, stride, rows, ready, n, acc);
        return;
    }
    do {
        const int32_t *xp = ready;
        len = ready != 0 ? n8 : (n8 - c0 < STP_DSP_S8_LOCAL ? n8 - c0 : STP_DSP_S8_LOCAL);
        if (ready == 0) {
            stp_dsp_pair_x(x + c0, len, local);
            xp = local;
        }
        for (i = 0; i < rows; i += 2) {
            const int8_t *r0 = w + i * stride, *p0 = r0 + c0, *p1 = p0 + stride;
            const int32_t *px = xp;
            int32_t a0 = c0 != 0 ? acc[i] : 0, a1 = c0 != 0 ? acc[i + 1] : 0, t;
            if (aligned) {
                __asm__ volatile(
                    "1:\n\t"
                    "ldmia %[px]!, {r8, r9, r10, r11}\n\t"
                    "ldmia %[p0]!, {r12, lr}\n\t"
                    "sxtb16 %[t], r12\n\t"
                    "smlad %[a0], %[t], r8, %[a0]\n\t"
                    "sxtb16 r12, r12, ror #8\n\t"
                    "smlad %[a0], r12, r9, %[a0]\n\t"
                    "sxtb16 %[t], lr\n\t"
                    "smlad %[a0], %[t], r10, %[a0]\n\t"
                    "sxtb16 lr, lr, ror #8\n\t"
                    "smlad %[a0], lr, r11, %[a0]\n\t"
                    "ldmia %[p1]!, {r12, lr}\n\t"
                    "sxtb16 %[t], r12\n\t"
                    "smlad %[a1], %[t], r8, %[a1]\n\t"
                    "sxtb16 r12, r12, ror #8\n\t"
                    "smlad %[a1], r12, r9, %[a1]\n\t"
                    "sxtb16 %[t], lr\n\t"
                    "smlad %[a1], %[t], r10, %[a1]\n\t"
                    "sxtb16 lr, lr, ror #8\n\t"
                    "smlad %[a1], lr, r11, %[a1]\n\t"
                    "cmp %[px], %[end]\n\t"
                    "bne 1b\n\t"
                    : [a0] "+r"(a0), [a1] "+r"(a1), [px] "+r"(px), [p0] "+r"(p0), [p1] "+r"(p1), [t] "=&r"(t)
                    : [end] "r"(xp + len / 2)
                    : "r8", "r9", "r10", "r11", "r12", "lr", "cc", "memory");
            } else {
                /* rows at any byte address: each weight word by LDR (no spare register needed) */
                __asm__ volatile(
                    "1:\n\t"
                    "ldmia %[px]!, {r8, r9, r10, r11}\n\t"
                    "ldr r12, [%[p0]], #4\n\t"
                    "sxtb16 lr, r12\n\t"
                    "smlad %[a0], lr, r8, %[a0]\n\t"
                    "sxtb16 r12, r12, ror #8\n\t"
                    "smlad %[a0], r12, r9, %[a0]\n\t"
                    "ldr r12, [%[p0]], #4\n\t"
                    "sxtb16 lr, r12\n\t"
                    "smlad %[a0], lr, r10, %[a0]\n\t"
                    "sxtb16 r12, r12, ror #8\n\t"
                    "smlad %[a0], r12, r11, %[a0]\n\t"
                    "ldr r12, [%[p1]], #4\n\t"
                    "sxtb16 lr, r12\n\t"
                    "smlad %[a1], lr, r8, %[a1]\n\t"
                    "sxtb16 r12, r12, ror #8\n\t"
                    "smlad %[a1], r12, r9, %[a1]\n\t"
                    "ldr r12, [%[p1]], #4\n\t"
                    "sxtb16 lr, r12\n\t"
                    "smlad %[a1], lr, r10, %[a1]\n\t"
                    "sxtb16 r12, r12, ror #8\n\t"
                    "smlad %[a1], r12, r11, %[a1]\n\t"
                    "cmp %[px], %[end]\n\t"
                    "bne 1b\n\t"
                    : [a0] "+r"(a0), [a1] "+r"(a1), [px] "+r"(px), [p0] "+r"(p0), [p1] "+r"(p1)
                    : [end] "r"(xp + len / 2)
                    : "r8", "r9", "r10", "r11", "r12", "lr", "cc", "memory");
            }
            if (c0 + len == n8)
                for (j = n8; j < n; j++) {
                    a0 += (int32_t)r0[j] * x[j];
                    a1 += (int32_t)r0[j + stride] * x[j];
                }
            acc[i] = a0;
            acc[i + 1] = a1;
        }
        c0 += len;
    } while (c0 < n8);
}

/* Rows of int8 (rows even) . x (n,) -> acc: the pair kernel from 8 columns on; shorter rows (e.g.
 * the input weights of a few inputs) in one pass per row with x in registers, groups of 4 columns
 * as one LDR + SXTB16 pair (x repacked once), the rest one by one. */
static inline __attribute__((always_inline)) void stp_dsp_short_rows_s8(const int8_t *w, int stride, int rows,
                                                                         const int16_t *x, const int n, int32_t *acc)
{
    int32_t xp[2] = {0, 0}, xr[3];
    const int32_t *end = acc + rows;
    const int j0 = n >= 4 ? 4 : 0;
    if (n >= 4) stp_dsp_pair_x(x, 4, xp);
    xr[0] = j0 < n ? x[j0] : 0; /* the last n - j0 (< 4) inputs, each once, in registers */
    xr[1] = j0 + 1 < n ? x[j0 + 1] : 0;
    xr[2] = j0 + 2 < n ? x[j0 + 2] : 0;
    for (; acc != end; acc++, w += stride) {
        int32_t a = 0;
        if (n >= 4) {
            uint32_t wq;
            __builtin_memcpy(&wq, w, 4);
            a = __smlad(__sxtb16((int32_t)wq), xp[0], a);
            a = __smlad(__sxtb16((int32_t)((wq >> 8) | (wq << 24))), xp[1], a);
        }
        if (j0 < n) a += (int32_t)w[j0] * xr[0];
        if (j0 + 1 < n) a += (int32_t)w[j0 + 1] * xr[1];
        if (j0 + 2 < n) a += (int32_t)w[j0 + 2] * xr[2];
        *acc = a;
    }
}

__attribute__((noinline)) static void stp_dsp_rows_s8(const int8_t *w, int stride, int rows, const int16_t *x,
                                                      int n, const int32_t *ready, int32_t *acc)
{
    if (n >= 8) {
        stp_dsp_dot2_s8(w, stride, rows, x, n, ready, acc);
        return;
    }
    STP_COUNT(mac, rows * n);
    switch (n) {
    case 1: stp_dsp_short_rows_s8(w, stride, rows, x, 1, acc); return;
    case 2: stp_dsp_short_rows_s8(w, stride, rows, x, 2, acc); return;
    case 3: stp_dsp_short_rows_s8(w, stride, rows, x, 3, acc); return;
    case 4: stp_dsp_short_rows_s8(w, stride, rows, x, 4, acc); return;
    case 5: stp_dsp_short_rows_s8(w, stride, rows, x, 5, acc); return;
    case 6: stp_dsp_short_rows_s8(w, stride, rows, x, 6, acc); return;
    case 7: stp_dsp_short_rows_s8(w, stride, rows, x, 7, acc); return;
    default: return; /* n = 0: no columns */
    }
}

/* Rows row0 .. row0 + rows - 1 (rows even) of m, first n columns, . x -> acc: int8 or int16. */
__attribute__((noinline)) static void stp_dsp_rows(const stp_mat_t *m, int row0, int rows, const int16_t *x, int n,
                                                   const int32_t *ready, int32_t *acc)
{
    if (m->w8 != 0)
        stp_dsp_rows_s8(m->w8 + row0 * m->cols, m->cols, rows, x, n, ready, acc);
    else
        stp_dsp_dot2_s16(m->w16 + row0 * m->cols, m->cols, rows, x, n, acc);
}
#endif

/* pre_o = sat16(shift(V_o h, shift_o) + bias_o) in int32 (the 32-bit rule covers the readout's
 * rows too).  Counts per row 1 shift, 1 add, 1 sat. */
void stp_readout_pre_s16(const stp_readout_t *r, const int16_t *h, int16_t *pre)
{
    int o = 0, count, j;
    int32_t acc[STP_READOUT_BLOCK];
#if defined(__ARM_FEATURE_DSP)
    int32_t hbuf[STP_DSP_S8_H / 2];
    const int32_t *hp = stp_dsp_prepare_s8(&r->w, h, r->w.cols, hbuf, STP_DSP_S8_H);
#endif
    for (; o < r->w.rows; o += count) {
        count = r->w.rows - o < STP_READOUT_BLOCK ? r->w.rows - o : STP_READOUT_BLOCK;
#if defined(__ARM_FEATURE_DSP)
        if (count > 1) {
            count &= ~1;
            stp_dsp_rows(&r->w, o, count, h, r->w.cols, hp, acc);
        } else
#endif
        {
            for (j = 0; j < count; j++) acc[j] = row_dot(&r->w, o + j, h, r->w.cols);
        }
        STP_COUNT(add, count);
        for (j = 0; j < count; j++) pre[o + j] = row_sat16(row_shift_s32(acc[j], r->shift[o + j]) + r->bias[o + j]);
    }
}

/* W (N, I) @ x + U (N, N) @ h + bias -> pre (N,) in the gate's table input format. */
void stp_gate_dense_s16(const stp_gate_t *g, const int16_t *x, const int16_t *h, int16_t *pre)
{
    int i = 0;
#if defined(__ARM_FEATURE_DSP)
    { /* int8 or int16 weights: blocks of row pairs */
        int32_t ax[STP_DSP_BLOCK], ar[STP_DSP_BLOCK], xbuf[STP_DSP_S8_X / 2], hbuf[STP_DSP_S8_H / 2];
        int count, right = shifts_positive(g->x_shift, g->h_shift, g->w.rows);
        const int32_t *xp = stp_dsp_prepare_s8(&g->w, x, g->w.cols, xbuf, STP_DSP_S8_X);
        const int32_t *hp = stp_dsp_prepare_s8(&g->u, h, g->u.cols, hbuf, STP_DSP_S8_H);
        for (i = 0; i + 1 < g->w.rows; i += count) {
            count = (g->w.rows - i) & ~1;
            if (count > STP_DSP_BLOCK) count = STP_DSP_BLOCK;
            stp_dsp_rows(&g->w, i, count, x, g->w.cols, xp, ax);
            stp_dsp_rows(&g->u, i, count, h, g->u.cols, hp, ar);
            combine_rows(g, i, count, ax, ar, pre, right);
        }
        if (i < g->w.rows)
            pre[i] = combine(g, i, row_dot(&g->w, i, x, g->w.cols), row_dot(&g->u, i, h, g->u.cols));
        return;
    }
#endif
#if defined(STP_HOST_SIMD)
    i = stp_host_gate_rows(g, x, &g->u, h, g->u.cols, pre);
#endif
    for (; i < g->w.rows; i++)
        pre[i] = combine(g, i, row_dot(&g->w, i, x, g->w.cols), row_dot(&g->u, i, h, g->u.cols));
}

/* z = sat16(shift(B[:k] h, z_shift)) (k,), then W x + A[:, :k] z + bias -> pre (N,), with
 * k = min(rank, the gate's stored rank). A smaller rank is only a loop bound: the factors are
 * sorted by singular value. */
void stp_gate_lowrank_s16(const stp_gate_t *g, const int16_t *x, const int16_t *h, int rank,
                          int16_t *z, int16_t *pre)
{
    int i = 0, k = 0;
    if (rank > g->b.rows) rank = g->b.rows;
#if defined(__ARM_FEATURE_DSP)
    { /* int8 or int16 weights: blocks of row pairs */
        int32_t ax[STP_DSP_BLOCK], ar[STP_DSP_BLOCK], xbuf[STP_DSP_S8_X / 2], hbuf[STP_DSP_S8_H / 2];
        int count, right = shifts_positive(g->x_shift, g->h_shift, g->w.rows);
        const int32_t *xp = stp_dsp_prepare_s8(&g->w, x, g->w.cols, xbuf, STP_DSP_S8_X);
        const int32_t *hp = stp_dsp_prepare_s8(&g->b, h, g->b.cols, hbuf, STP_DSP_S8_H);
        for (k = 0; k + 1 < rank; k += count) {
            count = (rank - k) & ~1;
            if (count > STP_DSP_BLOCK) count = STP_DSP_BLOCK;
            stp_dsp_rows(&g->b, k, count, h, g->b.cols, hp, ar);
            z_rows(g, k, count, ar, z);
        }
        if (k < rank) z[k] = z_row(row_dot(&g->b, k, h, g->b.cols), g->z_shift[k]);
        hp = stp_dsp_prepare_s8(&g->a, z, rank, hbuf, STP_DSP_S8_H); /* z's pairs replace h's */
        for (i = 0; i + 1 < g->w.rows; i += count) {
            count = (g->w.rows - i) & ~1;
            if (count > STP_DSP_BLOCK) count = STP_DSP_BLOCK;
            stp_dsp_rows(&g->w, i, count, x, g->w.cols, xp, ax);
            stp_dsp_rows(&g->a, i, count, z, rank, hp, ar);
            combine_rows(g, i, count, ax, ar, pre, right);
        }
        if (i < g->w.rows)
            pre[i] = combine(g, i, row_dot(&g->w, i, x, g->w.cols), row_dot(&g->a, i, z, rank));
        return;
    }
#endif
#if defined(STP_HOST_SIMD)
    k = stp_host_lowrank_z(g, h, rank, z);
#endif
    for (; k < rank; k++) z[k] = z_row(row_dot(&g->b, k, h, g->b.cols), g->z_shift[k]);
#if defined(STP_HOST_SIMD)
    i = stp_host_gate_rows(g, x, &g->a, z, rank, pre);
#endif
    for (; i < g->w.rows; i++)
        pre[i] = combine(g, i, row_dot(&g->w, i, x, g->w.cols), row_dot(&g->a, i, z, rank));
}
