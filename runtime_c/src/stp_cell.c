/* stp_cell.c -- RNN and MGU steps, the readout, reset, and the frame / sequence drivers.
 * Twin: compiler/reference.py (the spec). State is Q0.15 int16; scratch is caller-owned int16.
 * The calling contract and the checked build (-DSTP_CHECKS) are described in stp_model.h. */
#include <stddef.h>

#include "stp_model.h"

int stp_model_scratch_size(const stp_model_t *m)
{
    int n = m->hidden_size;
    return (m->cell == STP_CELL_MGU ? 3 * n : n) + m->rank_max;
}

int stp_model_state_size(const stp_model_t *m)
{
    return m->hidden_size + STP_STATE_TAG_SIZE;
}

void stp_reset_s16(int16_t *state, int n)
{
    int i;
    for (i = 0; i < n; i++) state[i] = 0;
}

#if defined(STP_CHECKS)
/* ---- the checked build ------------------------------------------------------------------ */
/* The state's tag: 30 bits mixed from the model's address and sizes, never 0 (so a zeroed or
 * fresh buffer does not pass), stored as two int16 of 15 bits each after the hidden values. */
static void state_tag(const stp_model_t *m, int16_t tag[STP_STATE_TAG_SIZE])
{
    uintptr_t a = (uintptr_t)m;
    uint32_t words[7], h = 0x811c9dc5u;
    int k;
    words[0] = (uint32_t)a;
    words[1] = (uint32_t)(a >> 16 >> 16); /* the high half of a 64-bit address (0 on 32 bits) */
    words[2] = (uint32_t)m->cell;
    words[3] = (uint32_t)m->input_size;
    words[4] = (uint32_t)m->hidden_size;
    words[5] = (uint32_t)m->output_size;
    words[6] = (uint32_t)m->rank_max;
    for (k = 0; k < 7; k++) {
        h = (h ^ words[k]) * 0x9e3779b1u;
        h ^= h >> 15;
    }
    h &= 0x3fffffffu;
    if (h == 0u) h = 1u;
    tag[0] = (int16_t)(h & 0x7fffu);
    tag[1] = (int16_t)(h >> 15);
}

/* One buffer of a call: n int16 from p (n = 0: absent). */
typedef struct {
    const int16_t *p;
    size_t n;
} span_t;

/* The buffers [a, a + n) and [b, b + m) share a byte; the addresses compared as integers. */
static int overlap(span_t a, span_t b)
{
    uintptr_t pa = (uintptr_t)a.p, pb = (uintptr_t)b.p;
    return a.n > 0 && b.n > 0 && pa < pb + b.n * sizeof(int16_t) && pb < pa + a.n * sizeof(int16_t);
}

/* steps * per int16 as a byte count that fits size_t: 1, else 0 (*out untouched). */
static int elements(int steps, int per, size_t *out)
{
    size_t s = (size_t)steps, p = (size_t)per;
    if (p != 0 && s > (size_t)-1 / sizeof(int16_t) / p) return 0;
    *out = s * p;
    return 1;
}

/* The checks of stp_model_step (steps = 1, states = NULL) and stp_model_run, after the NULL and
 * rank checks: buffer sizes, pairwise overlap of x, state, y, states and scratch, the state's tag. */
static int check_call(const stp_model_t *m, const int16_t *x, int steps, const int16_t *state, const int16_t *y,
                      const int16_t *states, const int16_t *scratch)
{
    span_t b[5];
    int16_t tag[STP_STATE_TAG_SIZE];
    int i, j, n = m->hidden_size;
    b[0].p = x;
    b[1].p = state;
    b[1].n = (size_t)stp_model_state_size(m);
    b[2].p = y;
    b[3].p = states;
    b[3].n = 0;
    b[4].p = scratch;
    b[4].n = (size_t)stp_model_scratch_size(m);
    if (!elements(steps, m->input_size, &b[0].n) ||
        !elements(m->readout.mode == STP_READOUT_PER_STEP ? steps : 1, m->output_size, &b[2].n) ||
        (states != NULL && !elements(steps, n, &b[3].n)))
        return STP_ERR_ARG;
    for (i = 0; i < 5; i++)
        for (j = i + 1; j < 5; j++)
            if (overlap(b[i], b[j])) return STP_ERR_ALIAS;
    state_tag(m, tag);
    if (state[n] != tag[0] || state[n + 1] != tag[1]) return STP_ERR_STATE;
    return STP_OK;
}
#endif

int stp_model_reset(const stp_model_t *m, int16_t *state)
{
#if defined(STP_CHECKS)
    if (m == NULL || state == NULL) return STP_ERR_NULL;
    state_tag(m, state + m->hidden_size);
#endif
    stp_reset_s16(state, m->hidden_size);
    return STP_OK;
}

static void gate_preact(const stp_gate_t *g, const int16_t *x, const int16_t *h, int rank,
                        int16_t *z, int16_t *pre)
{
    if (g->u.rows > 0)
        stp_gate_dense_s16(g, x, h, pre);
    else
        stp_gate_lowrank_s16(g, x, h, rank, z, pre);
}

/* h <- tanh(W x + U h + b).  scratch: pre (N) | z (R). */
void stp_rnn_step_s16(const stp_gate_t *g, const int16_t *x, int16_t *h, int rank, int16_t *scratch)
{
    int n = g->w.rows, i = 0;
    int16_t *pre = scratch, *z = scratch + n;
    gate_preact(g, x, h, rank, z, pre);
#if defined(STP_HOST_SIMD)
    i = stp_host_lut_rows(pre, g->table, h, n); /* x86 host: eight lanes per step (host/) */
#endif
    for (; i < n; i++) h[i] = stp_lut_q15(pre[i], g->table);
}

/* f = sigmoid(W_f x + U_f h + b_f); c = tanh(W_h x + U_h (f * h) + b_h); h <- h + f (c - h).
 * scratch: f (N) | f*h (N) | pre (N) | z (R). */
void stp_mgu_step_s16(const stp_gate_t *gf, const stp_gate_t *gh, const int16_t *x, int16_t *h,
                      int rank, int16_t *scratch)
{
    int n = gf->w.rows, i = 0;
    int16_t *f = scratch, *fh = scratch + n, *pre = scratch + 2 * n, *z = scratch + 3 * n;
    gate_preact(gf, x, h, rank, z, pre);
#if defined(STP_HOST_SIMD)
    i = stp_host_mgu_forget(pre, gf->table, h, f, fh, n); /* x86 host: eight lanes per step (host/) */
#endif
    for (; i < n; i++) {
        f[i] = stp_lut_q15(pre[i], gf->table);
        fh[i] = stp_mul_q15(f[i], h[i]);
    }
    gate_preact(gh, x, fh, rank, z, pre);
    i = 0;
#if defined(STP_HOST_SIMD)
    i = stp_host_mgu_blend(pre, gh->table, f, h, n);
#endif
    for (; i < n; i++) h[i] = stp_blend_q15(h[i], stp_lut_q15(pre[i], gh->table), f[i]);
}

/* y_o = act(sat16(shift(V_o h, shift_o) + bias_o)).  Counts per row: 1 shift, 1 add, 1 sat. */
void stp_readout_s16(const stp_readout_t *r, const int16_t *h, int16_t *y)
{
    int o;
    stp_readout_pre_s16(r, h, y);
    if (r->table != 0)
        for (o = 0; o < r->w.rows; o++) y[o] = stp_lut_q15(y[o], r->table);
}

static void cell_step(const stp_model_t *m, const int16_t *x, int16_t *state, int16_t *scratch, int rank)
{
    if (m->cell == STP_CELL_MGU)
        stp_mgu_step_s16(&m->gate_f, &m->gate_h, x, state, rank, scratch);
    else
        stp_rnn_step_s16(&m->gate_h, x, state, rank, scratch);
}

static int effective_rank(const stp_model_t *m, int rank)
{
    if (rank < 0 || rank > m->rank_max) return -1;
    return rank == 0 ? m->rank_max : rank;
}

/* The entry checks of stp_model_step (steps = 1, states = NULL) and stp_model_run: STP_OK and
 * the effective rank in *r, or an error. Unchecked: the rank and steps only. */
static int check_entry(const stp_model_t *m, const int16_t *x, int steps, const int16_t *state, const int16_t *y,
                       const int16_t *states, const int16_t *scratch, int rank, int *r)
{
#if defined(STP_CHECKS)
    if (m == NULL || x == NULL || state == NULL || y == NULL || scratch == NULL) return STP_ERR_NULL;
#else
    (void)x, (void)state, (void)y, (void)states, (void)scratch;
#endif
    *r = effective_rank(m, rank);
    if (*r < 0) return STP_ERR_RANK;
    if (steps < 1) return STP_ERR_ARG;
#if defined(STP_CHECKS)
    return check_call(m, x, steps, state, y, states, scratch);
#else
    return STP_OK;
#endif
}

int stp_model_step(const stp_model_t *m, const int16_t *x, int16_t *state, int16_t *y,
                   int16_t *scratch, int rank)
{
    int r, status = check_entry(m, x, 1, state, y, NULL, scratch, rank, &r);
    if (status != STP_OK) return status;
    cell_step(m, x, state, scratch, r);
    stp_readout_s16(&m->readout, state, y);
    return STP_OK;
}

/* Pointer steps, never t * size products: any steps an int holds is fine (the buffers exist). */
int stp_model_run(const stp_model_t *m, const int16_t *x, int steps, int16_t *state, int16_t *y,
                  int16_t *states, int16_t *scratch, int rank)
{
    int r, t, i, status = check_entry(m, x, steps, state, y, states, scratch, rank, &r);
    int n, in, out;
    if (status != STP_OK) return status;
    n = m->hidden_size, in = m->input_size, out = m->output_size;
    for (t = 0; t < steps; t++, x += in) {
        cell_step(m, x, state, scratch, r);
        if (states != NULL) {
            for (i = 0; i < n; i++) states[i] = state[i];
            states += n;
        }
        if (m->readout.mode == STP_READOUT_PER_STEP) {
            stp_readout_s16(&m->readout, state, y);
            y += out;
        }
    }
    if (m->readout.mode == STP_READOUT_FINAL) stp_readout_s16(&m->readout, state, y);
    return STP_OK;
}
