/* stp_test_vector.c -- TEST ONLY: array entry points for the AVX2 helpers (runtime_c/host/stp_host_simd.h).
 *
 * Compiled only into the stapes.host.Helpers cffi module (stapes.host.helpers), declared in
 * stp_test_vector.h. It is never part of the runtime library (runtime_c/) nor of a generated model.
 *
 * Each stp_test_<helper>(inputs..., out, n) runs the vector helper over n elements in blocks of
 * its lane count (8 int16 / int32 lanes, 4 int64 lanes); the last partial block is copied into a
 * zero-padded block, so every element goes through the vector helper, never the scalar one.
 * Loads and stores use the helpers the kernels use (stp_load_s8x4, stp_load_s16x8,
 * stp_store_s16x8, stp_store_s16x4) and the shift loads of the host kernels, so those are tested too.
 * Returns 0, or -1 when the build has no AVX2 (the vector helpers are then not compiled:
 * stp_test_vector_compiled() returns 0 and the tests skip).
 */
#include "stp_test_vector.h"

#include <string.h>

#include "stp_fixed.h"

#if defined(__AVX2__)
int stp_test_vector_compiled(void) { return 1; }

/* stp_sat16_s64x4 over int64 v -> int16 out (through stp_store_s16x4). */
static void stp_test_sat16_block(const int64_t *v, int16_t *out)
{
    stp_store_s16x4(out, stp_sat16_s64x4(_mm256_loadu_si256((const __m256i *)(const void *)v)));
}

int stp_test_sat16_s64x4(const int64_t *v, int16_t *out, long n)
{
    long k = 0;
    for (; k + 4 <= n; k += 4) stp_test_sat16_block(v + k, out + k);
    if (k < n) {
        int64_t vb[4] = {0, 0, 0, 0};
        int16_t ob[4];
        memcpy(vb, v + k, sizeof(int64_t) * (size_t)(n - k));
        stp_test_sat16_block(vb, ob);
        memcpy(out + k, ob, sizeof(int16_t) * (size_t)(n - k));
    }
    return 0;
}

/* stp_shift_round_s64x4 over int64 v (|v| <= 2^31) and int8 shifts (loaded as the kernels do). */
static void stp_test_shift_s64_block(const int64_t *v, const int8_t *s, int64_t *out)
{
    _mm256_storeu_si256((__m256i *)(void *)out,
                        stp_shift_round_s64x4(_mm256_loadu_si256((const __m256i *)(const void *)v), stp_load_s8x4(s)));
}

int stp_test_shift_round_s64x4(const int64_t *v, const int8_t *s, int64_t *out, long n)
{
    long k = 0;
    for (; k + 4 <= n; k += 4) stp_test_shift_s64_block(v + k, s + k, out + k);
    if (k < n) {
        int64_t vb[4] = {0, 0, 0, 0}, ob[4];
        int8_t sb[4] = {1, 1, 1, 1};
        memcpy(vb, v + k, sizeof(int64_t) * (size_t)(n - k));
        memcpy(sb, s + k, (size_t)(n - k));
        stp_test_shift_s64_block(vb, sb, ob);
        memcpy(out + k, ob, sizeof(int64_t) * (size_t)(n - k));
    }
    return 0;
}

/* stp_shift_round_s32x8 over int32 v and int8 shifts in 1..31 (widened as stp_x86_combine8 does). */
static void stp_test_shift_s32_block(const int32_t *v, const int8_t *s, int32_t *out)
{
    __m256i sv = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)s));
    _mm256_storeu_si256((__m256i *)(void *)out,
                        stp_shift_round_s32x8(_mm256_loadu_si256((const __m256i *)(const void *)v), sv));
}

int stp_test_shift_round_s32x8(const int32_t *v, const int8_t *s, int32_t *out, long n)
{
    long k = 0;
    for (; k + 8 <= n; k += 8) stp_test_shift_s32_block(v + k, s + k, out + k);
    if (k < n) {
        int32_t vb[8] = {0, 0, 0, 0, 0, 0, 0, 0}, ob[8];
        int8_t sb[8] = {1, 1, 1, 1, 1, 1, 1, 1};
        memcpy(vb, v + k, sizeof(int32_t) * (size_t)(n - k));
        memcpy(sb, s + k, (size_t)(n - k));
        stp_test_shift_s32_block(vb, sb, ob);
        memcpy(out + k, ob, sizeof(int32_t) * (size_t)(n - k));
    }
    return 0;
}

/* stp_mul_q15_x8 over int16 pairs. */
int stp_test_mul_q15_x8(const int16_t *a, const int16_t *b, int16_t *out, long n)
{
    long k = 0;
    for (; k + 8 <= n; k += 8)
        stp_store_s16x8(out + k, stp_mul_q15_x8(stp_load_s16x8(a + k), stp_load_s16x8(b + k)));
    if (k < n) {
        int16_t ab[8] = {0, 0, 0, 0, 0, 0, 0, 0}, bb[8] = {0, 0, 0, 0, 0, 0, 0, 0}, ob[8];
        memcpy(ab, a + k, sizeof(int16_t) * (size_t)(n - k));
        memcpy(bb, b + k, sizeof(int16_t) * (size_t)(n - k));
        stp_store_s16x8(ob, stp_mul_q15_x8(stp_load_s16x8(ab), stp_load_s16x8(bb)));
        memcpy(out + k, ob, sizeof(int16_t) * (size_t)(n - k));
    }
    return 0;
}

/* stp_blend_q15_x8 over int16 triples (h, c, f). */
int stp_test_blend_q15_x8(const int16_t *h, const int16_t *c, const int16_t *f, int16_t *out, long n)
{
    long k = 0;
    for (; k + 8 <= n; k += 8)
        stp_store_s16x8(out + k, stp_blend_q15_x8(stp_load_s16x8(h + k), stp_load_s16x8(c + k), stp_load_s16x8(f + k)));
    if (k < n) {
        int16_t hb[8] = {0, 0, 0, 0, 0, 0, 0, 0}, cb[8] = {0, 0, 0, 0, 0, 0, 0, 0}, fb[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int16_t ob[8];
        memcpy(hb, h + k, sizeof(int16_t) * (size_t)(n - k));
        memcpy(cb, c + k, sizeof(int16_t) * (size_t)(n - k));
        memcpy(fb, f + k, sizeof(int16_t) * (size_t)(n - k));
        stp_store_s16x8(ob, stp_blend_q15_x8(stp_load_s16x8(hb), stp_load_s16x8(cb), stp_load_s16x8(fb)));
        memcpy(out + k, ob, sizeof(int16_t) * (size_t)(n - k));
    }
    return 0;
}

/* stp_lut_q15_x8 over int16 v with one STP_LUT_SIZE-entry table. */
int stp_test_lut_q15_x8(const int16_t *v, const int16_t *table, int16_t *out, long n)
{
    long k = 0;
    for (; k + 8 <= n; k += 8) stp_store_s16x8(out + k, stp_lut_q15_x8(stp_load_s16x8(v + k), table));
    if (k < n) {
        int16_t vb[8] = {0, 0, 0, 0, 0, 0, 0, 0}, ob[8];
        memcpy(vb, v + k, sizeof(int16_t) * (size_t)(n - k));
        stp_store_s16x8(ob, stp_lut_q15_x8(stp_load_s16x8(vb), table));
        memcpy(out + k, ob, sizeof(int16_t) * (size_t)(n - k));
    }
    return 0;
}

/* Each a of as[0..na-1] against every int16 b: stp_mul_q15_x8 against the scalar stp_mul_q15,
 * one row of 65,536 b per a (all 2^32 pairs when as holds every int16). Returns the number of
 * mismatching pairs and writes the first one (a, b, vector, scalar) to first[0..3]. */
long stp_test_mul_q15_x8_rows(const int16_t *as, long na, int16_t *first)
{
    static int16_t bs[65536], vec[65536], ref[65536];
    long bad = 0, k;
    int j;
    for (j = 0; j < 65536; j++) bs[j] = (int16_t)(j + INT16_MIN);
    for (k = 0; k < na; k++) {
        __m128i av = _mm_set1_epi16(as[k]);
        for (j = 0; j < 65536; j += 8) stp_store_s16x8(vec + j, stp_mul_q15_x8(av, stp_load_s16x8(bs + j)));
        for (j = 0; j < 65536; j++) ref[j] = stp_mul_q15(as[k], bs[j]);
        for (j = 0; j < 65536; j++) {
            if (vec[j] != ref[j]) {
                if (bad == 0) { first[0] = as[k]; first[1] = bs[j]; first[2] = vec[j]; first[3] = ref[j]; }
                bad++;
            }
        }
    }
    return bad;
}
#else
/* No AVX2 in this build: the vector helpers do not exist; the entry points only report it. */
int stp_test_vector_compiled(void) { return 0; }
int stp_test_sat16_s64x4(const int64_t *v, int16_t *out, long n)
{ (void)v; (void)out; (void)n; return -1; }
int stp_test_shift_round_s64x4(const int64_t *v, const int8_t *s, int64_t *out, long n)
{ (void)v; (void)s; (void)out; (void)n; return -1; }
int stp_test_shift_round_s32x8(const int32_t *v, const int8_t *s, int32_t *out, long n)
{ (void)v; (void)s; (void)out; (void)n; return -1; }
int stp_test_mul_q15_x8(const int16_t *a, const int16_t *b, int16_t *out, long n)
{ (void)a; (void)b; (void)out; (void)n; return -1; }
int stp_test_blend_q15_x8(const int16_t *h, const int16_t *c, const int16_t *f, int16_t *out, long n)
{ (void)h; (void)c; (void)f; (void)out; (void)n; return -1; }
int stp_test_lut_q15_x8(const int16_t *v, const int16_t *table, int16_t *out, long n)
{ (void)v; (void)table; (void)out; (void)n; return -1; }
long stp_test_mul_q15_x8_rows(const int16_t *as, long na, int16_t *first)
{ (void)as; (void)na; (void)first; return -1; }
#endif
