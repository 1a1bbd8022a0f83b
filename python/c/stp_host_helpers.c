/* stp_host_helpers.c -- the scalar helpers of stp_fixed.h over arrays (stp_host_helpers.h). */
#include "stp_host_helpers.h"

#include "stp_fixed.h"

void stp_host_sat16(const int64_t *v, int16_t *out, long n)
{
    long k;
    for (k = 0; k < n; k++) out[k] = stp_sat16(v[k]);
}

void stp_host_shift_round(const int64_t *v, const int *s, int64_t *out, long n)
{
    long k;
    for (k = 0; k < n; k++) out[k] = stp_shift_round_s64(v[k], s[k]);
}

void stp_host_mul_q15(const int16_t *a, const int16_t *b, int16_t *out, long n)
{
    long k;
    for (k = 0; k < n; k++) out[k] = stp_mul_q15(a[k], b[k]);
}

void stp_host_blend_q15(const int16_t *h, const int16_t *c, const int16_t *f, int16_t *out, long n)
{
    long k;
    for (k = 0; k < n; k++) out[k] = stp_blend_q15(h[k], c[k], f[k]);
}

void stp_host_lut_q15(const int16_t *v, const int16_t *table, int16_t *out, long n)
{
    long k;
    for (k = 0; k < n; k++) out[k] = stp_lut_q15(v[k], table);
}
