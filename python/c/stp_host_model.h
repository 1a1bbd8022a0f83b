/* stp_host_model.h -- the generated model a host program is built against, named by defines.
 *
 * A generated model is <prefix>.h / <prefix>.c with <PREFIX>_* sizes and <prefix>_* functions;
 * the host programs (stp_host_batch.c, stp_host_model_main.c) are written once for any prefix:
 *   -DSTP_HOST_HEADER='"kws.h"' -DSTP_HOST_PREFIX=kws -DSTP_HOST_PREFIX_UC=KWS
 * (stapes.host.build.model_defines). Only the prototype below is the C API of this file; the
 * cffi modules read it as their cdef (lines starting with '#' are left out there).
 */
#ifndef STP_HOST_MODEL_H
#define STP_HOST_MODEL_H

#include <stdint.h>

#if !defined(STP_HOST_HEADER) || !defined(STP_HOST_PREFIX) || !defined(STP_HOST_PREFIX_UC)
#error "define STP_HOST_HEADER, STP_HOST_PREFIX and STP_HOST_PREFIX_UC (stapes.host.build.model_defines)"
#endif
#include STP_HOST_HEADER

#define STP_HOST_CAT_(a, b) a##b
#define STP_HOST_CAT(a, b) STP_HOST_CAT_(a, b)
#define STP_HOST_FN(name) STP_HOST_CAT(STP_HOST_PREFIX, name)
#define STP_HOST_SIZE(name) STP_HOST_CAT(STP_HOST_PREFIX_UC, name)

#define STP_HOST_INPUT_SIZE STP_HOST_SIZE(_INPUT_SIZE)
#define STP_HOST_OUTPUT_SIZE STP_HOST_SIZE(_OUTPUT_SIZE)
#define STP_HOST_STATE_SIZE STP_HOST_SIZE(_STATE_SIZE)
#define STP_HOST_SCRATCH_SIZE STP_HOST_SIZE(_SCRATCH_SIZE)
#define STP_HOST_FINAL_READOUT STP_HOST_SIZE(_FINAL_READOUT)

/* Run `batch` sequences x (batch, steps, I), each from a zero state, through <prefix>_run:
 * y (batch, steps or 1, O) and states (batch, steps, N). Returns the first non-zero status of
 * <prefix>_run (the later sequences are then not run), else 0. */
int stp_host_run_batch(const int16_t *x, int batch, int steps, int16_t *y, int16_t *states, int rank);

#endif /* STP_HOST_MODEL_H */
