/* stp_fixed.h -- the arithmetic contract (design.md section 3), C side.
 *
 * The ONLY file that shifts, rounds or saturates. Each helper names its numpy twin in
 * compiler/fixedpoint.py; the two are tested equal (exhaustively over int16 where one argument).
 * One rounding mode everywhere: round half up, (v + (1 << (s - 1))) >> s, arithmetic shift.
 * Saturate after every narrowing; never wrap; no signed overflow (int64 where a rounding add
 * could overflow). No build flag changes numerics: STP_COUNT_OPS only adds counters.
 */
#ifndef STP_FIXED_H
#define STP_FIXED_H

#include <stdint.h>

#define STP_RUNTIME_VERSION 1

/* Activation tables: 2^(16 - STP_LUT_STEP_BITS) + 1 int16 entries (twin: LUT_STEP_BITS). */
#define STP_LUT_STEP_BITS 6
#define STP_LUT_SIZE ((1 << (16 - STP_LUT_STEP_BITS)) + 1)

/* Status codes of functions whose input can be wrong. */
#define STP_OK 0
#define STP_ERR_RANK (-1)
#define STP_ERR_ARG (-2)

/* The contract needs an arithmetic right shift of negative values (implementation-defined in
 * C99; every supported compiler does it). Refuse to build where it does not hold. */
#if ((-1) >> 1) != -1
#error "stapes: the preprocessor does not shift right arithmetically"
#endif
typedef char stp_check_arith_shift[((int32_t)-3 >> 1) == (int32_t)-2 ? 1 : -1];

/* ---- optional op counters: the only mutable globals (defined in stp_ops.c) ---------------- */
typedef struct {
    uint64_t mac;   /* multiply-accumulate inside a mat-vec */
    uint64_t add;   /* additions and subtractions outside mat-vecs */
    uint64_t shift; /* rounding shifts (stp_shift_round_s64 and the shifts inside helpers) */
    uint64_t sat;   /* saturations to int16 */
    uint64_t lut;   /* interpolated table look-ups */
    uint64_t mul;   /* multiplies outside mat-vecs */
} stp_op_counts_t;

#ifdef STP_COUNT_OPS
extern stp_op_counts_t stp_ops;
#define STP_COUNT(kind, n) (stp_ops.kind += (uint64_t)(n))
#else
#define STP_COUNT(kind, n) ((void)0)
#endif

/* stp_sat16: clamp v to [-32768, 32767].  Twin: fixedpoint.sat16.  Counts 1 sat. */
static inline int16_t stp_sat16(int64_t v)
{
    STP_COUNT(sat, 1);
    if (v > INT16_MAX) return INT16_MAX;
    if (v < INT16_MIN) return INT16_MIN;
    return (int16_t)v;
}

/* stp_shift_round_s64: s > 0: (v + 2^(s-1)) >> s, round half up; s <= 0: exact v * 2^-s.
 * Range: |v| < 2^31, -16 <= s <= 31 (the compiler validates every shift), so the result
 * stays below 2^47 in magnitude.  Twin: fixedpoint.shift_round.  Counts 1 shift. */
static inline int64_t stp_shift_round_s64(int64_t v, int s)
{
    STP_COUNT(shift, 1);
    if (s > 0) return (v + ((int64_t)1 << (s - 1))) >> s;
    return v * ((int64_t)1 << -s);
}

/* stp_mul_q15: sat16((a * b + 2^14) >> 15), Q15 x Q15 -> Q15. Range: all int16 pairs; only
 * -32768 * -32768 saturates.  Twin: fixedpoint.mul_q15.  Counts 1 mul, 1 shift, 1 sat. */
static inline int16_t stp_mul_q15(int16_t a, int16_t b)
{
    STP_COUNT(mul, 1);
    return stp_sat16(stp_shift_round_s64((int64_t)a * b, 15));
}

/* stp_blend_q15: the MGU update h + f * (c - h) = sat16(h + ((f * (c - h) + 2^14) >> 15)).
 * Range: all int16 triples (|f * (c - h)| < 2^31).  Twin: fixedpoint.blend_q15.
 * Counts 2 add, 1 mul, 1 shift, 1 sat. */
static inline int16_t stp_blend_q15(int16_t h, int16_t c, int16_t f)
{
    int64_t d = (int64_t)c - h;
    STP_COUNT(add, 2);
    STP_COUNT(mul, 1);
    return stp_sat16(h + stp_shift_round_s64(f * d, 15));
}

/* stp_lut_q15: interpolated table look-up. i = (v + 32768) >> 6, r = (v + 32768) & 63,
 * y = T[i] + (((T[i+1] - T[i]) * r + 32) >> 6). Range: every int16 v with a table of
 * STP_LUT_SIZE entries; y lies between T[i] and T[i+1], so no saturation is needed.
 * Twin: fixedpoint.lut_q15.  Counts 1 lut (the interpolation is part of the look-up). */
static inline int16_t stp_lut_q15(int16_t v, const int16_t *table)
{
    int32_t u = (int32_t)v + 32768;
    int32_t i = u >> STP_LUT_STEP_BITS;
    int32_t r = u & ((1 << STP_LUT_STEP_BITS) - 1);
    int32_t lo = table[i];
    int32_t d = (int32_t)table[i + 1] - lo;
    STP_COUNT(lut, 1);
    return (int16_t)(lo + ((d * r + (1 << (STP_LUT_STEP_BITS - 1))) >> STP_LUT_STEP_BITS));
}

#if defined(__AVX2__)
/* ---- host x86 AVX2 forms of the helpers above (int64 x4, int32 x8, int16 x8 lanes) ----------
 * Used by the x86 kernels only (never on Cortex-M); the same numbers as the scalar helpers
 * (checked against them over every int16 input and every shift, and end to end on models). */
#include <immintrin.h>

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
#endif

#endif /* STP_FIXED_H */
