/* stp_host_matvec.h -- HOST ONLY (x86 SSE2 / SSE4.1 / AVX2): the row-block kernels of the gates.
 *
 * Not part of a microcontroller build: src/stp_matvec.c includes it only when the build defines
 * STP_HOST_SIMD (with runtime_c/host on the include path), after its combine(). Two entry points
 * do a prefix of a gate's work and return how far they got; stp_matvec.c's portable loops do the
 * rest, so the bits are the portable loops' bits:
 *   stp_host_gate_rows(g, x, r, v, nv, pre): pre for the first rows (a multiple of 4) -> rows done;
 *   stp_host_lowrank_z(g, h, rank, z): z = sat16(shift(B h)) for the first entries -> entries done.
 * Without __SSE2__ (a non-x86 host) both do nothing and return 0.
 */
#ifndef STP_HOST_MATVEC_H
#define STP_HOST_MATVEC_H

#include <stddef.h>
#include <stdint.h>

#include "stp_host_simd.h"
#include "stp_model.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#if defined(__SSE4_1__)
#include <smmintrin.h>
#endif

/* Host x86 path (SSE2 is part of every x86-64; SSE4.1 / AVX2 when the build enables them, e.g.
 * stapes.host adds -mavx2 on CPUs that have it; the Cortex-M builds never see it). The gate
 * kernels work on blocks of rows (4 with SSE2, 8 with AVX2) that share each load of x: PMADDWD
 * multiplies 8 (AVX2: 16) int16 pairs and adds neighbouring products into int32 lanes, and one
 * transpose / horizontal-add tree reduces all the block's rows together (no call and no
 * reduction per row). Each lane holds a partial sum of one row, which fits int32 by the row
 * proof, so the sums equal the portable loop's bit for bit. The requantisation (combine) and the
 * elementwise MGU steps use the AVX2 forms of the stp_fixed.h helpers (stp_host_simd.h). */
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

/* combine() for rows i .. i + 3. Counts per row 2 shift, 2 add, 1 sat (AVX2: the int64 lane helpers of
 * stp_host_simd.h, four rows at a time). */
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

/* combine() for rows i .. i + 7 (counts as combine4 twice). AVX2: when all 16 shifts are in 1..31
 * (the usual case) the rows run in int32 lanes: the compiler's 32-bit requantisation rule
 * (qgraph.prove_combine32) bounds both shifted sums plus |bias| below 2^31, and VPACKSSDW
 * saturates to int16 (sat16). Otherwise (a left shift, s <= 0) two combine4 in int64 lanes. */
static void stp_x86_combine8(const stp_gate_t *g, int i, const int32_t *ax, const int32_t *ar, int16_t *pre)
{
#if defined(__AVX2__)
    __m256i xs = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(g->x_shift + i)));
    __m256i hs = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(g->h_shift + i)));
    if (_mm256_movemask_epi8(_mm256_cmpgt_epi32(_mm256_set1_epi32(1), _mm256_min_epi32(xs, hs))) == 0) {
        __m256i t = _mm256_add_epi32(
            _mm256_add_epi32(stp_shift_round_s32x8(_mm256_loadu_si256((const __m256i *)(const void *)ax), xs),
                             stp_shift_round_s32x8(_mm256_loadu_si256((const __m256i *)(const void *)ar), hs)),
            _mm256_loadu_si256((const __m256i *)(const void *)(g->bias + i)));
        __m128i packed = _mm_packs_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
        STP_COUNT(add, 16);
        STP_COUNT(sat, 8);
        _mm_storeu_si128((__m128i *)(void *)(pre + i), packed);
        return;
    }
#endif
    stp_x86_combine4(g, i, ax, ar, pre);
    stp_x86_combine4(g, i + 4, ax + 4, ar + 4, pre);
}

#endif /* __SSE2__ */

/* Host x86: pre = combine(W x, R v) for the gate's rows in multiples of 4, R (N, >= nv) applied to
 * the first nv entries of v; blocks of up to STP_X86_BLOCK rows keep the int32 sums on the stack
 * (each stp_x86_matvec call has a fixed set-up cost, so few large blocks beat many small ones). Returns the
 * number of rows done (the caller finishes the last N mod 4). */
static int stp_host_gate_rows(const stp_gate_t *g, const int16_t *x, const stp_mat_t *r, const int16_t *v, int nv,
                              int16_t *pre)
{
#if defined(__SSE2__)
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
#else
    (void)g, (void)x, (void)r, (void)v, (void)nv, (void)pre;
    return 0;
#endif
}

/* Host x86: z_k = sat16(shift(B_k h, z_shift_k)) for the first rank - rank % 4 entries (rank: the
 * caller's, already at most B's rows), B h in blocks of up to STP_X86_BLOCK rows. Returns the
 * number of entries done (the caller finishes the last rank mod 4). */
static int stp_host_lowrank_z(const stp_gate_t *g, const int16_t *h, int rank, int16_t *z)
{
    int k = 0;
#if defined(__SSE2__)
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
        for (j = 0; j < count; j++) z[k + j] = z_row(az[j], g->z_shift[k + j]);
#endif
    }
#else
    (void)g, (void)h, (void)rank, (void)z;
#endif
    return k;
}

#endif /* STP_HOST_MATVEC_H */
