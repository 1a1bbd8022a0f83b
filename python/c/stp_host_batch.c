/* stp_host_batch.c -- stp_host_run_batch (stp_host_model.h): a batch of sequences in one call.
 *
 * Built into the host cffi module of a generated model and into its sanitizer executable, never
 * into the model itself. The state and scratch are sized by the model's header, exactly, so ASan
 * sees any access beyond them. */
#include "stp_host_model.h"

int stp_host_run_batch(const int16_t *x, int batch, int steps, int16_t *y, int16_t *states, int rank)
{
    int16_t state[STP_HOST_STATE_SIZE];
    int16_t scratch[STP_HOST_SCRATCH_SIZE];
    long ysize = (long)(STP_HOST_FINAL_READOUT ? 1 : steps) * STP_HOST_OUTPUT_SIZE;
    int b, rc = 0;
    for (b = 0; b < batch && rc == 0; b++) {
        STP_HOST_FN(_reset)(state);
        rc = STP_HOST_FN(_run)(x + (long)b * steps * STP_HOST_INPUT_SIZE, steps, state, y + b * ysize,
                               states + (long)b * steps * STP_HOST_STATE_SIZE, scratch, rank);
    }
    return rc;
}
