/* stp_model.h -- the kernels generated models call, and the const structs that describe a model.
 *
 * A model is const data (weights, shifts, biases, tables) plus these kernels; the generated
 * <model>.c only fills an stp_model_t. The caller owns the state (int16, STP hidden size) and
 * the scratch (int16, see stp_model_scratch_size); nothing here allocates or keeps state.
 * Every shift, format and bound was derived and checked by the compiler (compiler/quantize.py):
 * in particular every int32 mat-vec accumulation is proven not to overflow for any int16 input,
 * in any summation order.
 */
#ifndef STP_MODEL_H
#define STP_MODEL_H

#include <stdint.h>

#include "stp_fixed.h"

#define STP_CELL_RNN 0
#define STP_CELL_MGU 1

#define STP_READOUT_PER_STEP 0
#define STP_READOUT_FINAL 1

/* A row-major (rows, cols) weight matrix: exactly one of w8 / w16 is non-NULL. */
typedef struct {
    const int8_t *w8;
    const int16_t *w16;
    int rows;
    int cols;
} stp_mat_t;

/* One gate: pre = sat16(shift(W x, x_shift) + shift(R h, h_shift) + bias), y = table(pre).
 * R is dense (u.rows > 0) or low-rank A B (rank > 0): z = sat16(shift(B h, z_shift)), R h = A z. */
typedef struct {
    stp_mat_t w;            /* (N, I) input weights */
    stp_mat_t u;            /* (N, N) dense recurrent weights, or rows = 0 when low-rank */
    stp_mat_t b;            /* (R, N) low-rank right factor (rows = 0 when dense) */
    stp_mat_t a;            /* (N, R) low-rank left factor */
    const int8_t *z_shift;  /* (R,) B h accumulator -> z */
    const int8_t *x_shift;  /* (N,) W x accumulator -> pre-activation format */
    const int8_t *h_shift;  /* (N,) R h accumulator -> pre-activation format */
    const int32_t *bias;    /* (N,) in the pre-activation format */
    const int16_t *table;   /* STP_LUT_SIZE entries: tanh or sigmoid */
} stp_gate_t;

/* y = act(sat16(shift(V h, shift) + bias)); act is the table or, when table is NULL, linear. */
typedef struct {
    stp_mat_t w;            /* (O, N) */
    const int8_t *shift;    /* (O,) */
    const int32_t *bias;    /* (O,) */
    const int16_t *table;   /* sigmoid table or NULL */
    int mode;               /* STP_READOUT_PER_STEP or STP_READOUT_FINAL */
} stp_readout_t;

typedef struct {
    int cell;               /* STP_CELL_RNN: gate_h only; STP_CELL_MGU: gate_f and gate_h */
    int input_size;
    int hidden_size;
    int output_size;
    int rank_max;           /* largest low-rank rank, 0 when all recurrent matrices are dense */
    stp_gate_t gate_f;      /* MGU forget gate (unused by the RNN) */
    stp_gate_t gate_h;      /* RNN cell / MGU candidate */
    stp_readout_t readout;
} stp_model_t;

/* ---- mat-vec kernels (stp_matvec.c) ----------------------------------------------------- */
/* w (n,) . x (n,) -> int32, the inner loop of every mat-vec (int8 / int16 weights). */
int32_t stp_dot_s16_s8(const int8_t *w, const int16_t *x, int n);
int32_t stp_dot_s16_s16(const int16_t *w, const int16_t *x, int n);
/* pre (N,) from a gate with a dense recurrent matrix. */
void stp_gate_dense_s16(const stp_gate_t *g, const int16_t *x, const int16_t *h, int16_t *pre);
/* pre (N,) from a gate with a low-rank recurrent matrix at min(rank, b.rows); z (R,) scratch. */
void stp_gate_lowrank_s16(const stp_gate_t *g, const int16_t *x, const int16_t *h, int rank,
                          int16_t *z, int16_t *pre);

/* ---- cells (stp_cell.c) ------------------------------------------------------------------ */
/* int16 scratch elements a step needs: RNN N + R, MGU 3N + R. */
int stp_model_scratch_size(const stp_model_t *m);
void stp_reset_s16(int16_t *state, int n);
/* h <- tanh(W x + U h + b). scratch: N + R int16. */
void stp_rnn_step_s16(const stp_gate_t *g, const int16_t *x, int16_t *h, int rank, int16_t *scratch);
/* h <- MGU(x, h). scratch: 3N + R int16. */
void stp_mgu_step_s16(const stp_gate_t *gf, const stp_gate_t *gh, const int16_t *x, int16_t *h,
                      int rank, int16_t *scratch);
/* y (O,) from h (N,). */
void stp_readout_s16(const stp_readout_t *r, const int16_t *h, int16_t *y);
/* One frame: the cell step at `rank` (0 = full rank; ignored by dense models) then the readout.
 * Returns STP_OK or STP_ERR_RANK (rank outside 0..rank_max; nothing is touched then). */
int stp_model_step(const stp_model_t *m, const int16_t *x, int16_t *state, int16_t *y,
                   int16_t *scratch, int rank);
/* A sequence x (steps, I): per-step readout writes y (steps, O), a final readout writes y (O,)
 * after the last step only. states (steps, N) receives every step's state unless NULL. */
int stp_model_run(const stp_model_t *m, const int16_t *x, int steps, int16_t *state, int16_t *y,
                  int16_t *states, int16_t *scratch, int rank);

#endif /* STP_MODEL_H */
