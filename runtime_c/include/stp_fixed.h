/* stp_fixed.h -- the arithmetic contract (design.md section 3), C side.
 *
 * The ONLY file that shifts, rounds or saturates. Each helper names its numpy twin in
 * compiler/fixedpoint.py; the two are tested equal (exhaustively over int16 where one argument).
 * One rounding mode everywhere: round half up, (v + (1 << (s - 1))) >> s, arithmetic shift.
 * Saturate after every narrowing; never wrap; no signed overflow (int64 where a rounding add
 * could overflow). No build flag changes numerics: STP_COUNT_OPS only adds counters, STP_CHECKS
 * only adds argument checks (stp_model.h), STP_HOST_SIMD only adds x86 kernels (runtime_c/host).
 */
#ifndef STP_FIXED_H
#define STP_FIXED_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define STP_RUNTIME_VERSION 1

/* Activation tables: 2^(16 - STP_LUT_STEP_BITS) + 1 int16 entries (twin: LUT_STEP_BITS). */
#define STP_LUT_STEP_BITS 6
#define STP_LUT_SIZE ((1 << (16 - STP_LUT_STEP_BITS)) + 1)

/* Status of the entry points whose input can be wrong (stp_model_step, stp_model_run,
 * stp_model_reset and the generated <p>_step_rank / <p>_run). They return these values as int,
 * so the generated wrappers and every existing caller keep their signatures: compare the result
 * with the names. The checked build (-DSTP_CHECKS, stp_model.h) adds the last three errors;
 * without it no call returns them. Values are stable (part of the ABI). */
typedef enum stp_status {
    STP_OK = 0,
    STP_ERR_RANK = -1,  /* rank outside 0 .. rank_max (nothing touched) */
    STP_ERR_ARG = -2,   /* steps < 1; checked build: steps so large the buffers overflow size_t */
    STP_ERR_NULL = -3,  /* checked build: the model, x, state, y or scratch is NULL */
    STP_ERR_ALIAS = -4, /* checked build: two buffers of the call overlap */
    STP_ERR_STATE = -5  /* checked build: state not reset by stp_model_reset for this model */
} stp_status_t;

/* The contract needs an arithmetic right shift of negative values (implementation-defined in
 * C99; every supported compiler does it). Refuse to build where it does not hold. */
#if ((-1) >> 1) != -1
#error "stapes: the preprocessor does not shift right arithmetically"
#endif
typedef char stp_check_arith_shift[((int32_t)-3 >> 1) == (int32_t)-2 ? 1 : -1];

/* ---- optional op counters: the only mutable globals (defined in stp_ops.c) ----------------
 * A counting build (-DSTP_COUNT_OPS) adds to one global struct without locks: it is not
 * thread-safe (concurrent calls give wrong counts, never wrong outputs). Host measurements only. */
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

#ifdef __cplusplus
}
#endif

/* Host builds only (-DSTP_HOST_SIMD -I runtime_c/host; never on a microcontroller): the x86 AVX2
 * lane forms of the helpers above, in runtime_c/host/stp_host_simd.h. */
#if defined(STP_HOST_SIMD)
#include "stp_host_simd.h"
#endif

#endif /* STP_FIXED_H */
