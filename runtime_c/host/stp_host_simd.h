/* stp_host_simd.h -- HOST ONLY (x86): the AVX2 lane forms of the stp_fixed.h helpers and the
 * elementwise cell loops built on them.
 *
 * Not part of a microcontroller build: it is read only when the build defines STP_HOST_SIMD and
 * puts runtime_c/host on the include path (stapes.host does; CMake: STAPES_HOST_SIMD). stp_fixed.h
 * includes it at its end then, so the runtime's sources and the harness's test programs see the
 * lane helpers; the row-block mat-vec kernels are in stp_host_matvec.h. Every function computes
 * the same numbers as the scalar helpers (checked against them over every int16 input and every
 * shift, and end to end on models). Without __AVX2__ (e.g. a plain x86-64 build, or a non-x86
 * host) the lane helpers are absent and the loops below do nothing (they return 0).
 */
#ifndef STP_HOST_SIMD_H
#define STP_HOST_SIMD_H

#include <stdint.h>

#include "stp_fixed.h"

#if defined(__AVX2__)
#include <immintrin.h>

/* ---- the helpers, in lanes: int64 x4, int32 x8, int16 x8 --------------------------------- */
/* stp_shift_round_s64x4: stp_shift_round_s64 per lane (v: |v| < 2^31, s: -16..31), without a
 * branch: (v * 2^17 + 2^(s + 16)) >> (s + 17) is round half up for s > 0 and exact v * 2^-s for
 * s <= 0 (v * 2^17 is divisible by 2^(s + 17) then); |v * 2^17| < 2^48, so nothing overflows.
 * AVX2 has no 64-bit arithmetic shift: ~(~u >> t) (logical) is one for negative u.
 * Twin: fixedpoint.shift_round.  Counts 4 shift. */
static inline __m256i stp_shift_round_s64x4(__m256i v, __m256i s)
{
    __m256i u = _mm256_add_epi64(_mm256_slli_epi64(v, 17),
                                 _mm256_sllv_epi64(_mm256_set1_epi64x(1), _mm256_add_epi64(s, _mm256_set1_epi64x(16))));
    __m256i neg = _mm256_cmpgt_epi64(_mm256_setzero_si256(), u);
    STP_COUNT(shift, 4);
    return _mm256_xor_si256(_mm256_srlv_epi64(_mm256_xor_si256(u, neg), _mm256_add_epi64(s, _mm256_set1_epi64x(17))),
                            neg);
}

/* stp_shift_round_s32x8: stp_shift_round_s64 per int32 lane for shifts s in 1..31 only (the caller
 * checks): (v >> s) + bit s - 1 of v is round half up without the add that could overflow int32;
 * the result is within +-2^(31 - s).  Twin: fixedpoint.shift_round.  Counts 8 shift. */
static inline __m256i stp_shift_round_s32x8(__m256i v, __m256i s)
{
    STP_COUNT(shift, 8);
    return _mm256_add_epi32(_mm256_srav_epi32(v, s),
                            _mm256_and_si256(_mm256_srav_epi32(v, _mm256_sub_epi32(s, _mm256_set1_epi32(1))),
                                             _mm256_set1_epi32(1)));
}

/* stp_sat16_s64x4: stp_sat16 per lane (int64 lanes clamped to [-32768, 32767]).
 * Twin: fixedpoint.sat16.  Counts 4 sat. */
static inline __m256i stp_sat16_s64x4(__m256i v)
{
    const __m256i hi = _mm256_set1_epi64x(INT16_MAX), lo = _mm256_set1_epi64x(INT16_MIN);
    STP_COUNT(sat, 4);
    v = _mm256_blendv_epi8(v, hi, _mm256_cmpgt_epi64(v, hi));
    return _mm256_blendv_epi8(v, lo, _mm256_cmpgt_epi64(lo, v));
}

/* Loads and stores: 4 int8 (shifts) -> 4 int64 lanes; 8 int16; 4 int64 lanes already in int16
 * range -> p[0..3]. */
static inline __m256i stp_load_s8x4(const int8_t *p)
{
    int32_t bytes;
    __builtin_memcpy(&bytes, p, 4);
    return _mm256_cvtepi8_epi64(_mm_cvtsi32_si128(bytes));
}

static inline __m128i stp_load_s16x8(const int16_t *p)
{
    return _mm_loadu_si128((const __m128i *)(const void *)p);
}

static inline void stp_store_s16x8(int16_t *p, __m128i v)
{
    _mm_storeu_si128((__m128i *)(void *)p, v);
}

static inline void stp_store_s16x4(int16_t *p, __m256i v)
{
    __m128i d = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6)));
    _mm_storel_epi64((__m128i *)(void *)p, _mm_packs_epi32(d, d));
}

/* ---- eight int16 lanes (__m128i) in, eight out: the elementwise helpers ------------------- */
/* stp_mul_q15_x8: stp_mul_q15 per lane. VPMULHRSW is ((a * b >> 14) + 1) >> 1 = (a * b + 2^14) >> 15
 * exactly; it wraps only for -32768 * -32768 (to -32768), which the xor turns into 32767.
 * Twin: fixedpoint.mul_q15.  Counts 8 mul, 8 shift, 8 sat. */
static inline __m128i stp_mul_q15_x8(__m128i a, __m128i b)
{
    const __m128i min = _mm_set1_epi16(INT16_MIN);
    STP_COUNT(mul, 8);
    STP_COUNT(shift, 8);
    STP_COUNT(sat, 8);
    return _mm_xor_si128(_mm_mulhrs_epi16(a, b), _mm_and_si128(_mm_cmpeq_epi16(a, min), _mm_cmpeq_epi16(b, min)));
}

/* stp_blend_q15_x8: stp_blend_q15 per lane, in int32 lanes: |f * (c - h)| + 2^14 < 2^31, and
 * VPACKSSDW saturates to int16 as stp_sat16 does.  Twin: fixedpoint.blend_q15.
 * Counts 16 add, 8 mul, 8 shift, 8 sat. */
static inline __m128i stp_blend_q15_x8(__m128i h, __m128i c, __m128i f)
{
    __m256i h32 = _mm256_cvtepi16_epi32(h);
    __m256i p = _mm256_mullo_epi32(_mm256_cvtepi16_epi32(f), _mm256_sub_epi32(_mm256_cvtepi16_epi32(c), h32));
    __m256i y = _mm256_add_epi32(h32, _mm256_srai_epi32(_mm256_add_epi32(p, _mm256_set1_epi32(1 << 14)), 15));
    STP_COUNT(add, 16);
    STP_COUNT(mul, 8);
    STP_COUNT(shift, 8);
    STP_COUNT(sat, 8);
    return _mm_packs_epi32(_mm256_castsi256_si128(y), _mm256_extracti128_si256(y, 1));
}

/* stp_lut_q15_x8: stp_lut_q15 per lane. One 32-bit gather at table + i reads T[i] (low half) and
 * T[i + 1] (high half); i <= 1023, so the read ends inside the STP_LUT_SIZE-entry table.
 * Twin: fixedpoint.lut_q15.  Counts 8 lut. */
static inline __m128i stp_lut_q15_x8(__m128i v, const int16_t *table)
{
    __m256i u = _mm256_add_epi32(_mm256_cvtepi16_epi32(v), _mm256_set1_epi32(32768));
    __m256i pair = _mm256_i32gather_epi32((const int *)(const void *)table, _mm256_srli_epi32(u, STP_LUT_STEP_BITS), 2);
    __m256i lo = _mm256_srai_epi32(_mm256_slli_epi32(pair, 16), 16);
    __m256i d = _mm256_sub_epi32(_mm256_srai_epi32(pair, 16), lo);
    __m256i r = _mm256_and_si256(u, _mm256_set1_epi32((1 << STP_LUT_STEP_BITS) - 1));
    __m256i y = _mm256_add_epi32(lo, _mm256_srai_epi32(_mm256_add_epi32(_mm256_mullo_epi32(d, r),
                                                                        _mm256_set1_epi32(1 << (STP_LUT_STEP_BITS - 1))),
                                                       STP_LUT_STEP_BITS));
    STP_COUNT(lut, 8);
    return _mm_packs_epi32(_mm256_castsi256_si128(y), _mm256_extracti128_si256(y, 1));
}

#endif /* __AVX2__ */

/* ---- the elementwise cell loops (stp_cell.c), eight lanes per step with AVX2 ---------------
 * Each does elements 0 .. n - n % 8 - 1 (none without AVX2) and returns how many it did; the
 * caller's scalar loop finishes the rest. */

/* h[i] = stp_lut_q15(pre[i], table): the RNN's tanh. */
static inline int stp_host_lut_rows(const int16_t *pre, const int16_t *table, int16_t *h, int n)
{
    int i = 0;
#if defined(__AVX2__)
    for (; i + 8 <= n; i += 8) stp_store_s16x8(h + i, stp_lut_q15_x8(stp_load_s16x8(pre + i), table));
#else
    (void)pre, (void)table, (void)h, (void)n;
#endif
    return i;
}

/* f[i] = stp_lut_q15(pre[i], table), fh[i] = stp_mul_q15(f[i], h[i]): the MGU's forget gate. */
static inline int stp_host_mgu_forget(const int16_t *pre, const int16_t *table, const int16_t *h, int16_t *f,
                                      int16_t *fh, int n)
{
    int i = 0;
#if defined(__AVX2__)
    for (; i + 8 <= n; i += 8) {
        __m128i fv = stp_lut_q15_x8(stp_load_s16x8(pre + i), table);
        stp_store_s16x8(f + i, fv);
        stp_store_s16x8(fh + i, stp_mul_q15_x8(fv, stp_load_s16x8(h + i)));
    }
#else
    (void)pre, (void)table, (void)h, (void)f, (void)fh, (void)n;
#endif
    return i;
}

/* h[i] = stp_blend_q15(h[i], stp_lut_q15(pre[i], table), f[i]): the MGU's update. */
static inline int stp_host_mgu_blend(const int16_t *pre, const int16_t *table, const int16_t *f, int16_t *h, int n)
{
    int i = 0;
#if defined(__AVX2__)
    for (; i + 8 <= n; i += 8) {
        __m128i c = stp_lut_q15_x8(stp_load_s16x8(pre + i), table);
        stp_store_s16x8(h + i, stp_blend_q15_x8(stp_load_s16x8(h + i), c, stp_load_s16x8(f + i)));
    }
#else
    (void)pre, (void)table, (void)f, (void)h, (void)n;
#endif
    return i;
}

#endif /* STP_HOST_SIMD_H */
