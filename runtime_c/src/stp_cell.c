/* stp_cell.c -- RNN and MGU steps, the readout, reset, and the frame / sequence drivers.
 * Twin: compiler/reference.py (the spec). State is Q0.15 int16; scratch is caller-owned int16. */
#include "stp_model.h"

int stp_model_scratch_size(const stp_model_t *m)
{
    int n = m->hidden_size;
    return (m->cell == STP_CELL_MGU ? 3 * n : n) + m->rank_max;
}

void stp_reset_s16(int16_t *state, int n)
{
    int i;
    for (i = 0; i < n; i++) state[i] = 0;
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
    int n = g->w.rows, i;
    int16_t *pre = scratch, *z = scratch + n;
    gate_preact(g, x, h, rank, z, pre);
    i = 0;
#if defined(__AVX2__)
    for (; i + 8 <= n; i += 8) stp_store_s16x8(h + i, stp_lut_q15_x8(stp_load_s16x8(pre + i), g->table));
#endif
    for (; i < n; i++) h[i] = stp_lut_q15(pre[i], g->table);
}

/* f = sigmoid(W_f x + U_f h + b_f); c = tanh(W_h x + U_h (f * h) + b_h); h <- h + f (c - h).
 * scratch: f (N) | f*h (N) | pre (N) | z (R). */
void stp_mgu_step_s16(const stp_gate_t *gf, const stp_gate_t *gh, const int16_t *x, int16_t *h,
                      int rank, int16_t *scratch)
{
    int n = gf->w.rows, i;
    int16_t *f = scratch, *fh = scratch + n, *pre = scratch + 2 * n, *z = scratch + 3 * n;
    gate_preact(gf, x, h, rank, z, pre);
    i = 0;
#if defined(__AVX2__)
    for (; i + 8 <= n; i += 8) { /* host x86: eight lanes per step (stp_fixed.h's AVX2 helpers) */
        __m128i fv = stp_lut_q15_x8(stp_load_s16x8(pre + i), gf->table);
        stp_store_s16x8(f + i, fv);
        stp_store_s16x8(fh + i, stp_mul_q15_x8(fv, stp_load_s16x8(h + i)));
    }
#endif
    for (; i < n; i++) {
        f[i] = stp_lut_q15(pre[i], gf->table);
        fh[i] = stp_mul_q15(f[i], h[i]);
    }
    gate_preact(gh, x, fh, rank, z, pre);
    i = 0;
#if defined(__AVX2__)
    for (; i + 8 <= n; i += 8) {
        __m128i c = stp_lut_q15_x8(stp_load_s16x8(pre + i), gh->table);
        stp_store_s16x8(h + i, stp_blend_q15_x8(stp_load_s16x8(h + i), c, stp_load_s16x8(f + i)));
    }
#endif
    for (; i < n; i++) h[i] = stp_blend_q15(h[i], stp_lut_q15(pre[i], gh->table), f[i]);
}

/* y_o = act(sat16(shift(V_o h, shift_o) + bias_o)).  Counts per row: 1 shift, 1 add, 1 sat. */
void stp_readout_s16(const stp_readout_t *r, const int16_t *h, int16_t *y)
{
    int o;
    for (o = 0; o < r->w.rows; o++) {
        int32_t acc = r->w.w8 != 0 ? stp_dot_s16_s8(r->w.w8 + o * r->w.cols, h, r->w.cols)
                                   : stp_dot_s16_s16(r->w.w16 + o * r->w.cols, h, r->w.cols);
        int16_t v;
        STP_COUNT(add, 1);
        v = stp_sat16(stp_shift_round_s64(acc, r->shift[o]) + r->bias[o]);
        y[o] = r->table != 0 ? stp_lut_q15(v, r->table) : v;
    }
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

int stp_model_step(const stp_model_t *m, const int16_t *x, int16_t *state, int16_t *y,
                   int16_t *scratch, int rank)
{
    int r = effective_rank(m, rank);
    if (r < 0) return STP_ERR_RANK;
    cell_step(m, x, state, scratch, r);
    stp_readout_s16(&m->readout, state, y);
    return STP_OK;
}

int stp_model_run(const stp_model_t *m, const int16_t *x, int steps, int16_t *state, int16_t *y,
                  int16_t *states, int16_t *scratch, int rank)
{
    int r = effective_rank(m, rank), t, i;
    int n = m->hidden_size, in = m->input_size, out = m->output_size;
    if (r < 0) return STP_ERR_RANK;
    if (steps < 1) return STP_ERR_ARG;
    for (t = 0; t < steps; t++) {
        cell_step(m, x + t * in, state, scratch, r);
        if (states != 0)
            for (i = 0; i < n; i++) states[t * n + i] = state[i];
        if (m->readout.mode == STP_READOUT_PER_STEP) stp_readout_s16(&m->readout, state, y + t * out);
    }
    if (m->readout.mode == STP_READOUT_FINAL) stp_readout_s16(&m->readout, state, y);
    return STP_OK;
}
