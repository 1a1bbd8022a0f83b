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

/* pre_i = sat16(shift(W_i x, x_shift_i) + shift(r_i, h_shift_i) + bias_i), all in int64.
 * Counts 2 shift, 2 add, 1 sat. */
static int16_t combine(const stp_gate_t *g, int i, int32_t ax, int32_t ar)
{
    int64_t v = stp_shift_round_s64(ax, g->x_shift[i]) + stp_shift_round_s64(ar, g->h_shift[i]);
    STP_COUNT(add, 2);
    return stp_sat16(v + g->bias[i]);
}

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
__attribute__((noinline)) static void stp_dsp_dot2_s16(const int16_t *w, int stride, int rows, const int16_t *x,
                                                       int n, int32_t *acc)
{
    const int16_t *end8 = x + (n & ~7), *xend = x + n;
    int i;
    if (((((uintptr_t)w) | ((uintptr_t)x)) & 3u) != 0u || (stride & 1) != 0) {
        for (i = 0; i < rows; i++) acc[i] = stp_dot_s16_s16(w + i * stride, x, n);
        return;
    }
    STP_COUNT(mac, rows * n);
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
#endif

/* W (N, I) @ x + U (N, N) @ h + bias -> pre (N,) in the gate's table input format. */
void stp_gate_dense_s16(const stp_gate_t *g, const int16_t *x, const int16_t *h, int16_t *pre)
{
    int i = 0;
#if defined(__ARM_FEATURE_DSP)
    if (g->w.w16 != 0 && g->u.w16 != 0) { /* int16 weights: blocks of row pairs */
        int32_t ax[STP_DSP_BLOCK], ar[STP_DSP_BLOCK];
        int j, count;
        for (i = 0; i + 1 < g->w.rows; i += count) {
            count = (g->w.rows - i) & ~1;
            if (count > STP_DSP_BLOCK) count = STP_DSP_BLOCK;
            stp_dsp_dot2_s16(g->w.w16 + i * g->w.cols, g->w.cols, count, x, g->w.cols, ax);
            stp_dsp_dot2_s16(g->u.w16 + i * g->u.cols, g->u.cols, count, h, g->u.cols, ar);
            for (j = 0; j < count; j++) pre[i + j] = combine(g, i + j, ax[j], ar[j]);
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
    if (g->w.w16 != 0 && g->b.w16 != 0 && g->a.w16 != 0) { /* int16: blocks of row pairs */
        int32_t ax[STP_DSP_BLOCK], ar[STP_DSP_BLOCK];
        int j, count;
        for (k = 0; k + 1 < rank; k += count) {
            count = (rank - k) & ~1;
            if (count > STP_DSP_BLOCK) count = STP_DSP_BLOCK;
            stp_dsp_dot2_s16(g->b.w16 + k * g->b.cols, g->b.cols, count, h, g->b.cols, ar);
            for (j = 0; j < count; j++) z[k + j] = stp_sat16(stp_shift_round_s64(ar[j], g->z_shift[k + j]));
        }
        if (k < rank)
            z[k] = stp_sat16(stp_shift_round_s64(row_dot(&g->b, k, h, g->b.cols), g->z_shift[k]));
        for (i = 0; i + 1 < g->w.rows; i += count) {
            count = (g->w.rows - i) & ~1;
            if (count > STP_DSP_BLOCK) count = STP_DSP_BLOCK;
            stp_dsp_dot2_s16(g->w.w16 + i * g->w.cols, g->w.cols, count, x, g->w.cols, ax);
            stp_dsp_dot2_s16(g->a.w16 + i * g->a.cols, g->a.cols, count, z, rank, ar);
            for (j = 0; j < count; j++) pre[i + j] = combine(g, i + j, ax[j], ar[j]);
        }
        if (i < g->w.rows)
            pre[i] = combine(g, i, row_dot(&g->w, i, x, g->w.cols), row_dot(&g->a, i, z, rank));
        return;
    }
#endif
#if defined(STP_HOST_SIMD)
    k = stp_host_lowrank_z(g, h, rank, z);
#endif
    for (; k < rank; k++)
        z[k] = stp_sat16(stp_shift_round_s64(row_dot(&g->b, k, h, g->b.cols), g->z_shift[k]));
#if defined(STP_HOST_SIMD)
    i = stp_host_gate_rows(g, x, &g->a, z, rank, pre);
#endif
    for (; i < g->w.rows; i++)
        pre[i] = combine(g, i, row_dot(&g->w, i, x, g->w.cols), row_dot(&g->a, i, z, rank));
}
