/* stp_model.h -- the kernels generated models call, and the const structs that describe a model.
 *
 * A model is const data (weights, shifts, biases, tables) plus these kernels; the generated
 * <model>.c only fills an stp_model_t. The caller owns the state (int16, stp_model_state_size)
 * and the scratch (int16, stp_model_scratch_size); nothing here allocates or keeps state.
 * Every shift, format and bound was derived and checked by the compiler (compiler/quantize.py):
 * in particular every int32 mat-vec accumulation is proven not to overflow for any int16 input,
 * in any summation order.
 *
 * ---- The calling contract (stp_model_reset / _step / _run and the generated wrappers) -----
 * Pointers: the model, x, state, y and scratch must be valid and non-NULL; only `states` (run)
 *   may be NULL. x holds I int16 per step, y O per step (per-step readout) or O (final readout),
 *   states N per step, state stp_model_state_size(m), scratch stp_model_scratch_size(m).
 * Aliasing: no two buffers of one call may overlap -- y, states and scratch must not overlap
 *   state, x or each other, and x must not overlap the state (x is only read). The model (const)
 *   may be shared by any number of states and calls.
 * State: one state buffer per stream and model; reset it with stp_model_reset(m, state) (the
 *   generated <p>_reset) before the first step; it persists across calls until the next reset.
 *   Scratch holds nothing between calls.
 * Threads: every call is re-entrant; calls on different state and scratch buffers may run
 *   concurrently (the model is read only). One state or scratch must not be used by two calls at
 *   once. The STP_COUNT_OPS counters are one global and not thread-safe (stp_fixed.h).
 * Errors: see stp_status_t (stp_fixed.h). Without STP_CHECKS only the rank and steps are
 *   checked and a broken contract is undefined behaviour. With -DSTP_CHECKS (for development;
 *   the arithmetic and its bits are unchanged) the step and run entry points check in this order
 *   and return the first failure: STP_ERR_NULL (a NULL pointer), STP_ERR_RANK / STP_ERR_ARG,
 *   STP_ERR_ALIAS (overlapping buffers, address ranges compared as uintptr_t), STP_ERR_STATE (a
 *   state not reset by stp_model_reset for this model object); a failing call touches nothing. The
 *   checked state carries STP_STATE_TAG_SIZE more int16 after the N hidden values (a tag that
 *   stp_model_reset writes from the model's address and sizes), so its buffer is larger (the
 *   generated <P>_STATE_SIZE follows); the hidden values and every output are the same bits.
 */
#ifndef STP_MODEL_H
#define STP_MODEL_H

#include <stdint.h>

#include "stp_fixed.h"

#ifdef __cplusplus
extern "C" {
#endif

/* int16 elements the checked build adds to the state (0 without STP_CHECKS). */
#if defined(STP_CHECKS)
#define STP_STATE_TAG_SIZE 2
#else
#define STP_STATE_TAG_SIZE 0
#endif

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
/* pre (O,) = sat16(shift(V h, shift) + bias), the readout's rows before its activation (pre may
 * be the readout's y). */
void stp_readout_pre_s16(const stp_readout_t *r, const int16_t *h, int16_t *pre);

/* ---- cells (stp_cell.c) ------------------------------------------------------------------ */
/* int16 scratch elements a step needs: RNN N + R, MGU 3N + R. */
int stp_model_scratch_size(const stp_model_t *m);
/* int16 elements of a state: N, plus STP_STATE_TAG_SIZE in the checked build. */
int stp_model_state_size(const stp_model_t *m);
/* Zero the state (start of a stream); the checked build also writes the state's tag. Call it
 * before the first step. Returns STP_OK, or STP_ERR_NULL (checked build: m or state NULL). */
int stp_model_reset(const stp_model_t *m, int16_t *state);
/* Zero n int16 (the hidden values only: the checked entry points need stp_model_reset). */
void stp_reset_s16(int16_t *state, int n);
/* The kernels below check nothing (the entry points further down do): h <- tanh(W x + U h + b).
 * scratch: N + R int16. */
void stp_rnn_step_s16(const stp_gate_t *g, const int16_t *x, int16_t *h, int rank, int16_t *scratch);
/* h <- MGU(x, h). scratch: 3N + R int16. */
void stp_mgu_step_s16(const stp_gate_t *gf, const stp_gate_t *gh, const int16_t *x, int16_t *h,
                      int rank, int16_t *scratch);
/* y (O,) from h (N,). */
void stp_readout_s16(const stp_readout_t *r, const int16_t *h, int16_t *y);
/* One frame: the cell step at `rank` (0 = full rank; ignored by dense models) then the readout.
 * Returns STP_OK or STP_ERR_RANK (rank outside 0..rank_max; nothing is touched then); the
 * checked build's errors first (see the contract above). */
int stp_model_step(const stp_model_t *m, const int16_t *x, int16_t *state, int16_t *y,
                   int16_t *scratch, int rank);
/* A sequence x (steps, I): per-step readout writes y (steps, O), a final readout writes y (O,)
 * after the last step only. states (steps, N) receives every step's hidden values unless NULL.
 * Returns STP_OK, STP_ERR_RANK, or STP_ERR_ARG (steps < 1); the checked build's errors first.
 * Any steps >= 1 an int holds is fine: the buffers are indexed in pointer steps, not int products. */
int stp_model_run(const stp_model_t *m, const int16_t *x, int steps, int16_t *state, int16_t *y,
                  int16_t *states, int16_t *scratch, int rank);

#ifdef __cplusplus
}
#endif

#endif /* STP_MODEL_H */
