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
 * the block loop and the pair loop below; operands a0, a1, px, p0, p1; clobbers r4-r6, r8-r10. */
#define STP_DSP_PAIR_8MACS \
    "ldmia %[px]!, {r4, r5, r6, r8}\n\t" \
    "ldmia %[p0]!, {r9, r10}\n\t" \
    "smlad %[a0], r9, r4, %[a0]\n\t" \
    "smlad %[a0], r10, r5, %[a0]\n\t" \
    "ldmia %[p1]!, {r9, r10}\n\t" \
    "smlad %[a1], r9, r4, %[a1]\n\t" \
    "smlad %[a1], r10, r5, %[a1]\n\t" \
    "ldmia %[p0]!, {r9, r10}\n\t" \
    "smlad %[a0], r9, r6, %[a0]\n\t" \
    "smlad %[a0], r10, r8, %[a0]\n\t" \
    "ldmia %[p1]!, {r9, r10}\n\t" \
    "smlad %[a1], r9, r6, %[a1]\n\t" \
    "smlad %[a1], r10, r8, %[a1]\n\t"

#endif
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__SSE4_1__)
#include <smmintrin.h>
#endif
#if defined(__AVX2__)
#include <immintrin.h>
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

#if defined(__SSE2__)
/* Host x86 path (SSE2 is part of every x86-64; SSE4.1 / AVX2 when the build enables them, e.g.
 * stapes.host adds -mavx2 on CPUs that have it; the Cortex-M builds never see it). The gate
 * kernels work on blocks of rows (4 with SSE2, 8 with AVX2) that share each load of x: PMADDWD
 * multiplies 8 (AVX2: 16) int16 pairs and adds neighbouring products into int32 lanes, and one
 * transpose / horizontal-add tree reduces all the block's rows together (no call and no
 * reduction per row). Each lane holds a partial sum of one row, which fits int32 by the row
 * proof, so the sums equal the portable loop's bit for bit. The requantisation (combine) and the
 * elementwise MGU steps use the AVX2 forms of the stp_fixed.h helpers. */
static inline __m128i stp_x86_load8(const int8_t *w8, const int16_t *w16, ptrdiff_t j)
{
    if (w8 != 0) {
        __m128i v = _mm_loadl_epi64((const __m128i *)(const void *)(w8 + j));
#if defined(__SSE4_1__)
        return _mm_cvtepi8_epi16(v);
#else
        return _mm_srai_epi16(_mm_unpacklo_epi8(v, v), 8);  /* sign-extend: w * 257 >> 8 */
#endif
    }
    return _mm_loadu_si128((const __m128i *)(const void *)(w16 + j));
}

#if defined(__AVX2__)
static inline __m256i stp_x86_load16(const int8_t *w8, const int16_t *w16, ptrdiff_t j)
{
    if (w8 != 0) return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(w8 + j)));
    return _mm256_loadu_si256((const __m256i *)(const void *)(w16 + j));
}
#endif

/* Rows w, w + stride, w + 2 stride, w + 3 stride (int8 w8 or int16 w16: one is NULL, so the
 * compiler specialises each inlined call) . x (n,) -> out[0..3]. */
static inline __attribute__((always_inline)) void stp_x86_dot4(const int8_t *w8, const int16_t *w16, int stride,
                                                               const int16_t *x, int n, int32_t *out)
{
    __m128i a0 = _mm_setzero_si128(), a1 = a0, a2 = a0, a3 = a0, xv, t0, t1;
    int j = 0, k;
#if defined(__AVX2__)
    if (n >= 16) {
        __m256i b0 = _mm256_setzero_si256(), b1 = b0, b2 = b0, b3 = b0, yv;
        for (; j + 16 <= n; j += 16) {
            yv = _mm256_loadu_si256((const __m256i *)(const void *)(x + j));
            b0 = _mm256_add_epi32(b0, _mm256_madd_epi16(stp_x86_load16(w8, w16, j), yv));
            b1 = _mm256_add_epi32(b1, _mm256_madd_epi16(stp_x86_load16(w8, w16, j + stride), yv));
            b2 = _mm256_add_epi32(b2, _mm256_madd_epi16(stp_x86_load16(w8, w16, j + 2 * stride), yv));
            b3 = _mm256_add_epi32(b3, _mm256_madd_epi16(stp_x86_load16(w8, w16, j + 3 * stride), yv));
        }
        a0 = _mm_add_epi32(_mm256_castsi256_si128(b0), _mm256_extracti128_si256(b0, 1));
        a1 = _mm_add_epi32(_mm256_castsi256_si128(b1), _mm256_extracti128_si256(b1, 1));
        a2 = _mm_add_epi32(_mm256_castsi256_si128(b2), _mm256_extracti128_si256(b2, 1));
        a3 = _mm_add_epi32(_mm256_castsi256_si128(b3), _mm256_extracti128_si256(b3, 1));
    }
#endif
    for (; j + 8 <= n; j += 8) {
        xv = _mm_loadu_si128((const __m128i *)(const void *)(x + j));
        a0 = _mm_add_epi32(a0, _mm_madd_epi16(stp_x86_load8(w8, w16, j), xv));
        a1 = _mm_add_epi32(a1, _mm_madd_epi16(stp_x86_load8(w8, w16, j + stride), xv));
        a2 = _mm_add_epi32(a2, _mm_madd_epi16(stp_x86_load8(w8, w16, j + 2 * stride), xv));
        a3 = _mm_add_epi32(a3, _mm_madd_epi16(stp_x86_load8(w8, w16, j + 3 * stride), xv));
    }
    /* transpose-add: [a0 a1 a2 a3] lane sums */
    t0 = _mm_add_epi32(_mm_unpacklo_epi32(a0, a1), _mm_unpackhi_epi32(a0, a1));
    t1 = _mm_add_epi32(_mm_unpacklo_epi32(a2, a3), _mm_unpackhi_epi32(a2, a3));
    _mm_storeu_si128((__m128i *)(void *)out, _mm_add_epi32(_mm_unpacklo_epi64(t0, t1), _mm_unpackhi_epi64(t0, t1)));
    for (; j < n; j++)
        for (k = 0; k < 4; k++)
            out[k] += (int32_t)(w8 != 0 ? w8[j + k * stride] : w16[j + k * stride]) * x[j];
}

#if defined(__AVX2__)
/* AVX2: rows w + k stride (k = 0..7) . x (n,) -> out[0..7]. Per row one accumulator of 8 int32
 * lanes (16 columns per VPMADDWD; an 8-column rest goes into the low half), then three rounds of
 * VPHADDD and one cross-half add reduce the eight rows together. Rows of 8 .. 15 columns (e.g. the
 * input weights) take one 128-bit VPMADDWD per row and two 128-bit VPHADDD trees instead. */
static inline __attribute__((always_inline)) void stp_x86_dot8(const int8_t *w8, const int16_t *w16, ptrdiff_t stride,
                                                               const int16_t *x, int n, int32_t *out)
{
    __m256i a0, a1, a2, a3, a4, a5, a6, a7, h0, h1;
    ptrdiff_t j = 0;
    int k;
#define STP_X86_FULL(acc, row) acc = _mm256_madd_epi16(stp_x86_load16(w8, w16, j + (row) * stride), yv)
    if (n >= 16) {  /* the first 16 columns set the accumulators, the rest add to them */
        __m256i yv = _mm256_loadu_si256((const __m256i *)(const void *)x);
        STP_X86_FULL(a0, 0); STP_X86_FULL(a1, 1);
        STP_X86_FULL(a2, 2); STP_X86_FULL(a3, 3);
        STP_X86_FULL(a4, 4); STP_X86_FULL(a5, 5);
        STP_X86_FULL(a6, 6); STP_X86_FULL(a7, 7);
        for (j = 16; j + 16 <= n; j += 16) {
            yv = _mm256_loadu_si256((const __m256i *)(const void *)(x + j));
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(stp_x86_load16(w8, w16, j), yv));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(stp_x86_load16(w8, w16, j + stride), yv));
            a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(stp_x86_load16(w8, w16, j + 2 * stride), yv));
            a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(stp_x86_load16(w8, w16, j + 3 * stride), yv));
            a4 = _mm256_add_epi32(a4, _mm256_madd_epi16(stp_x86_load16(w8, w16, j + 4 * stride), yv));
            a5 = _mm256_add_epi32(a5, _mm256_madd_epi16(stp_x86_load16(w8, w16, j + 5 * stride), yv));
            a6 = _mm256_add_epi32(a6, _mm256_madd_epi16(stp_x86_load16(w8, w16, j + 6 * stride), yv));
            a7 = _mm256_add_epi32(a7, _mm256_madd_epi16(stp_x86_load16(w8, w16, j + 7 * stride), yv));
        }
        if (n - j >= 8) {
            __m128i xv = _mm_loadu_si128((const __m128i *)(const void *)(x + j));
            a0 = _mm256_add_epi32(a0, _mm256_zextsi128_si256(_mm_madd_epi16(stp_x86_load8(w8, w16, j), xv)));
            a1 = _mm256_add_epi32(a1, _mm256_zextsi128_si256(_mm_madd_epi16(stp_x86_load8(w8, w16, j + stride), xv)));
            a2 = _mm256_add_epi32(a2, _mm256_zextsi128_si256(_mm_madd_epi16(stp_x86_load8(w8, w16, j + 2 * stride), xv)));
            a3 = _mm256_add_epi32(a3, _mm256_zextsi128_si256(_mm_madd_epi16(stp_x86_load8(w8, w16, j + 3 * stride), xv)));
            a4 = _mm256_add_epi32(a4, _mm256_zextsi128_si256(_mm_madd_epi16(stp_x86_load8(w8, w16, j + 4 * stride), xv)));
            a5 = _mm256_add_epi32(a5, _mm256_zextsi128_si256(_mm_madd_epi16(stp_x86_load8(w8, w16, j + 5 * stride), xv)));
            a6 = _mm256_add_epi32(a6, _mm256_zextsi128_si256(_mm_madd_epi16(stp_x86_load8(w8, w16, j + 6 * stride), xv)));
            a7 = _mm256_add_epi32(a7, _mm256_zextsi128_si256(_mm_madd_epi16(stp_x86_load8(w8, w16, j + 7 * stride), xv)));
            j += 8;
        }
    } else if (n >= 8) {  /* short rows (e.g. the input weights): one 8-column step, 128-bit tree */
        __m128i xv = _mm_loadu_si128((const __m128i *)(const void *)x), c0, c1, c2, c3;
        c0 = _mm_madd_epi16(stp_x86_load8(w8, w16, 0), xv);
        c1 = _mm_madd_epi16(stp_x86_load8(w8, w16, stride), xv);
        c2 = _mm_madd_epi16(stp_x86_load8(w8, w16, 2 * stride), xv);
        c3 = _mm_madd_epi16(stp_x86_load8(w8, w16, 3 * stride), xv);
        _mm_storeu_si128((__m128i *)(void *)out, _mm_hadd_epi32(_mm_hadd_epi32(c0, c1), _mm_hadd_epi32(c2, c3)));
        c0 = _mm_madd_epi16(stp_x86_load8(w8, w16, 4 * stride), xv);
        c1 = _mm_madd_epi16(stp_x86_load8(w8, w16, 5 * stride), xv);
        c2 = _mm_madd_epi16(stp_x86_load8(w8, w16, 6 * stride), xv);
        c3 = _mm_madd_epi16(stp_x86_load8(w8, w16, 7 * stride), xv);
        _mm_storeu_si128((__m128i *)(void *)(out + 4),
                         _mm_hadd_epi32(_mm_hadd_epi32(c0, c1), _mm_hadd_epi32(c2, c3)));
        for (j = 8; j < n; j++)
            for (k = 0; k < 8; k++)
                out[k] += (int32_t)(w8 != 0 ? w8[j + k * stride] : w16[j + k * stride]) * x[j];
        return;
    } else {
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = _mm256_setzero_si256();
    }
#undef STP_X86_FULL
    h0 = _mm256_hadd_epi32(_mm256_hadd_epi32(a0, a1), _mm256_hadd_epi32(a2, a3));
    h1 = _mm256_hadd_epi32(_mm256_hadd_epi32(a4, a5), _mm256_hadd_epi32(a6, a7));
    /* h0 = rows 0..3 (low-half sums | high-half sums), h1 = rows 4..7: add the halves */
    _mm256_storeu_si256((__m256i *)(void *)out, _mm256_add_epi32(_mm256_permute2x128_si256(h0, h1, 0x20),
                                                                  _mm256_permute2x128_si256(h0, h1, 0x31)));
    for (; j < n; j++)
        for (k = 0; k < 8; k++)
            out[k] += (int32_t)(w8 != 0 ? w8[j + k * stride] : w16[j + k * stride]) * x[j];
}
#endif

/* Rows per stp_x86_matvec call in the gates (a multiple of 8; the int32 sums live on the stack). */
#define STP_X86_BLOCK 128

/* Rows w + i stride, i = 0 .. rows - 1 (rows a multiple of 4) . x (n,) -> out (rows,). */
static inline __attribute__((always_inline)) void stp_x86_rows(const int8_t *w8, const int16_t *w16, int stride,
                                                               int rows, const int16_t *x, int n, int32_t *out)
{
    int i = 0;
#if defined(__AVX2__)
    for (; i + 8 <= rows; i += 8)
        stp_x86_dot8(w8 != 0 ? w8 + i * stride : 0, w16 != 0 ? w16 + i * stride : 0, stride, x, n, out + i);
#endif
    for (; i < rows; i += 4)
        stp_x86_dot4(w8 != 0 ? w8 + i * stride : 0, w16 != 0 ? w16 + i * stride : 0, stride, x, n, out + i);
}

/* Rows row0 .. row0 + rows - 1 (rows a multiple of 4) of m, first n columns, . x -> out (rows,).
 * Counts rows * n mac. */
static void stp_x86_matvec(const stp_mat_t *m, int row0, int rows, const int16_t *x, int n, int32_t *out)
{
    STP_COUNT(mac, rows * n);
    if (m->w8 != 0)
        stp_x86_rows(m->w8 + row0 * m->cols, 0, m->cols, rows, x, n, out);
    else
        stp_x86_rows(0, m->w16 + row0 * m->cols, m->cols, rows, x, n, out);
}
#endif

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

#if defined(__SSE2__)
/* combine() for rows i .. i + 3. Counts per row 2 shift, 2 add, 1 sat (AVX2: the int64 helpers of
 * stp_fixed.h, four rows at a time). */
static void stp_x86_combine4(const stp_gate_t *g, int i, const int32_t *ax, const int32_t *ar, int16_t *pre)
{
#if defined(__AVX2__)
    __m256i v = _mm256_add_epi64(
        stp_shift_round_s64x4(_mm256_cvtepi32_epi64(_mm_loadu_si128((const __m128i *)(const void *)ax)),
                              stp_load_s8x4(g->x_shift + i)),
        stp_shift_round_s64x4(_mm256_cvtepi32_epi64(_mm_loadu_si128((const __m128i *)(const void *)ar)),
                              stp_load_s8x4(g->h_shift + i)));
    STP_COUNT(add, 8);
    stp_store_s16x4(pre + i, stp_sat16_s64x4(_mm256_add_epi64(
        v, _mm256_cvtepi32_epi64(_mm_loadu_si128((const __m128i *)(const void *)(g->bias + i))))));
#else
    int k;
    for (k = 0; k < 4; k++) pre[i + k] = combine(g, i + k, ax[k], ar[k]);
#endif
}

/* combine() for rows i .. i + 7 (counts as combine4 twice). AVX2: when all 16 shifts are in 2..31
 * (the usual case) both shifts run in int32 lanes: each result is within +-2^29, so their sum
 * fits int32 too; only the sums with the bias widen to int64. Otherwise (a shift <= 1, where two
 * results of +2^30 could overflow int32) two combine4. */
static void stp_x86_combine8(const stp_gate_t *g, int i, const int32_t *ax, const int32_t *ar, int16_t *pre)
{
#if defined(__AVX2__)
    __m256i xs = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(g->x_shift + i)));
    __m256i hs = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(g->h_shift + i)));
    if (_mm256_movemask_epi8(_mm256_cmpgt_epi32(_mm256_set1_epi32(2), _mm256_min_epi32(xs, hs))) == 0) {
        __m256i t = _mm256_add_epi32(
            stp_shift_round_s32x8(_mm256_loadu_si256((const __m256i *)(const void *)ax), xs),
            stp_shift_round_s32x8(_mm256_loadu_si256((const __m256i *)(const void *)ar), hs));
        __m256i b = _mm256_loadu_si256((const __m256i *)(const void *)(g->bias + i));
        STP_COUNT(add, 16);
        stp_store_s16x4(pre + i, stp_sat16_s64x4(_mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(t)),
                                                                  _mm256_cvtepi32_epi64(_mm256_castsi256_si128(b)))));
        stp_store_s16x4(pre + i + 4, stp_sat16_s64x4(_mm256_add_epi64(
            _mm256_cvtepi32_epi64(_mm256_extracti128_si256(t, 1)), _mm256_cvtepi32_epi64(_mm256_extracti128_si256(b, 1)))));
        return;
    }
#endif
    stp_x86_combine4(g, i, ax, ar, pre);
    stp_x86_combine4(g, i + 4, ax + 4, ar + 4, pre);
}

/* Host x86: pre = combine(W x, R v) for the gate's rows in multiples of 4, R (N, >= nv) applied to
 * the first nv entries of v; blocks of up to STP_X86_BLOCK rows keep the int32 sums on the stack
 * (each stp_x86_matvec call has a fixed set-up cost, so few large blocks beat many small ones). Returns the
 * number of rows done (the caller finishes the last N mod 4). */
static int stp_x86_gate_rows(const stp_gate_t *g, const int16_t *x, const stp_mat_t *r, const int16_t *v, int nv,
                             int16_t *pre)
{
    int32_t ax[STP_X86_BLOCK], ar[STP_X86_BLOCK];
    int i0, k, count, rows = g->w.rows - g->w.rows % 4;
    for (i0 = 0; i0 < rows; i0 += count) {
        count = rows - i0 < STP_X86_BLOCK ? rows - i0 : STP_X86_BLOCK;
        stp_x86_matvec(&g->w, i0, count, x, g->w.cols, ax);
        stp_x86_matvec(r, i0, count, v, nv, ar);
        for (k = 0; k + 8 <= count; k += 8) stp_x86_combine8(g, i0 + k, ax + k, ar + k, pre);
        if (k < count) stp_x86_combine4(g, i0 + k, ax + k, ar + k, pre);
    }
    return rows;
}
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
            "ldmia %[px]!, {r4, r5, r6, r8}\n\t"
            "ldmia %[p0]!, {r9, r10}\n\t"
            "smuad %[a0], r9, r4\n\t"
            "smlad %[a0], r10, r5, %[a0]\n\t"
            "ldmia %[p1]!, {r9, r10}\n\t"
            "smuad %[a1], r9, r4\n\t"
            "smlad %[a1], r10, r5, %[a1]\n\t"
            "ldmia %[p0]!, {r9, r10}\n\t"
            "smlad %[a0], r9, r6, %[a0]\n\t"
            "smlad %[a0], r10, r8, %[a0]\n\t"
            "ldmia %[p1]!, {r9, r10}\n\t"
            "smlad %[a1], r9, r6, %[a1]\n\t"
            "smlad %[a1], r10, r8, %[a1]\n\t"
            "cmp %[px], %[end]\n\t"
            "beq 3f\n\t"
            "1:\n\t"
            STP_DSP_PAIR_8MACS
            "cmp %[px], %[end]\n\t"
            "bne 1b\n\t"
            "3:\n\t"
            "strd %[a0], %[a1], [%[out]], #8\n\t"
            "ldr r9, %[advm]\n\t"
            "add %[p0], %[p1], r9\n\t"
            "ldr r9, %[sbm]\n\t"
            "add %[p1], %[p0], r9\n\t"
            "ldr r9, %[outendm]\n\t"
            "cmp %[out], r9\n\t"
            "bne 2b\n\t"
            : [a0] "=&r"(a0), [a1] "=&r"(a1), [px] "=&r"(px), [p0] "+r"(p0), [p1] "+r"(p1), [out] "+r"(out)
            : [end] "r"(x + n), [xm] "m"(xm), [advm] "m"(adv), [sbm] "m"(sb), [outendm] "m"(outend)
            : "r4", "r5", "r6", "r8", "r9", "r10", "cc", "memory");
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
                : "r4", "r5", "r6", "r8", "r9", "r10", "cc", "memory");
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
#if defined(__SSE2__)
    i = stp_x86_gate_rows(g, x, &g->u, h, g->u.cols, pre);
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
#if defined(__SSE2__)
    { /* host x86: B h in blocks of up to STP_X86_BLOCK rows (multiples of 4), then the gate's rows */
        int32_t az[STP_X86_BLOCK];
        int j, count;
        for (; k + 4 <= rank; k += count) {
            count = rank - k < STP_X86_BLOCK ? (rank - k) - (rank - k) % 4 : STP_X86_BLOCK;
            stp_x86_matvec(&g->b, k, count, h, g->b.cols, az);
#if defined(__AVX2__)
            for (j = 0; j < count; j += 4)
                stp_store_s16x4(z + k + j, stp_sat16_s64x4(stp_shift_round_s64x4(
                    _mm256_cvtepi32_epi64(_mm_loadu_si128((const __m128i *)(const void *)(az + j))),
                    stp_load_s8x4(g->z_shift + k + j))));
#else
            for (j = 0; j < count; j++) z[k + j] = stp_sat16(stp_shift_round_s64(az[j], g->z_shift[k + j]));
#endif
        }
        for (; k < rank; k++)
            z[k] = stp_sat16(stp_shift_round_s64(row_dot(&g->b, k, h, g->b.cols), g->z_shift[k]));
        i = stp_x86_gate_rows(g, x, &g->a, z, rank, pre);
    }
#endif
    for (; k < rank; k++)
        z[k] = stp_sat16(stp_shift_round_s64(row_dot(&g->b, k, h, g->b.cols), g->z_shift[k]));
    for (; i < g->w.rows; i++)
        pre[i] = combine(g, i, row_dot(&g->w, i, x, g->w.cols), row_dot(&g->a, i, z, rank));
}
