/* stp_test_vector.h -- TEST ONLY: array entry points of the AVX2 helpers of stp_fixed.h.
 *
 * Defined in stp_test_vector.c, which is compiled only into the stapes.host.Helpers cffi module
 * (never into the runtime library nor a generated model). Each returns 0, or -1 when the build
 * has no AVX2 (then stp_test_vector_compiled() is 0). The cffi module reads this file as its
 * cdef (lines starting with '#' are left out there). */
#ifndef STP_TEST_VECTOR_H
#define STP_TEST_VECTOR_H

#include <stdint.h>

int stp_test_vector_compiled(void);
int stp_test_sat16_s64x4(const int64_t *v, int16_t *out, long n);
int stp_test_shift_round_s64x4(const int64_t *v, const int8_t *s, int64_t *out, long n);
int stp_test_shift_round_s32x8(const int32_t *v, const int8_t *s, int32_t *out, long n);
int stp_test_mul_q15_x8(const int16_t *a, const int16_t *b, int16_t *out, long n);
int stp_test_blend_q15_x8(const int16_t *h, const int16_t *c, const int16_t *f, int16_t *out, long n);
int stp_test_lut_q15_x8(const int16_t *v, const int16_t *table, int16_t *out, long n);
long stp_test_mul_q15_x8_rows(const int16_t *as, long na, int16_t *first);

#endif /* STP_TEST_VECTOR_H */
