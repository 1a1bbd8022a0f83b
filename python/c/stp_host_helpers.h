/* stp_host_helpers.h -- array entry points of the scalar stp_fixed.h helpers (stp_host_helpers.c).
 *
 * stapes.host.Helpers calls them on numpy arrays to test each helper against its numpy twin in
 * stapes.fixed.fixedpoint. Each applies the helper elementwise to n elements. The cffi module
 * reads this file as its cdef (lines starting with '#' are left out there). */
#ifndef STP_HOST_HELPERS_H
#define STP_HOST_HELPERS_H

#include <stdint.h>

void stp_host_sat16(const int64_t *v, int16_t *out, long n);
void stp_host_shift_round(const int64_t *v, const int *s, int64_t *out, long n);
void stp_host_mul_q15(const int16_t *a, const int16_t *b, int16_t *out, long n);
void stp_host_blend_q15(const int16_t *h, const int16_t *c, const int16_t *f, int16_t *out, long n);
void stp_host_lut_q15(const int16_t *v, const int16_t *table, int16_t *out, long n);

#endif /* STP_HOST_HELPERS_H */
