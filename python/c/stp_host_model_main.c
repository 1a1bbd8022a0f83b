/* stp_host_model_main.c -- a generated model as a stand-alone program (the sanitizer build).
 *
 * argv: in.bin out.bin batch steps rank (stp_host_io.h). Built by stapes.host.run_sanitized with
 * ASan + UBSan, with stp_host_batch.c and the model named by the defines of stp_host_model.h. */
#include "stp_host_io.h"
#include "stp_host_model.h"

int main(int argc, char **argv)
{
    int batch, steps, rank;
    long nx, ny, ns;
    int16_t *x, *y, *states;
    if (argc != 6) return STP_HOST_EXIT_USAGE;
    batch = atoi(argv[3]);
    steps = atoi(argv[4]);
    rank = atoi(argv[5]);
    nx = (long)batch * steps * STP_HOST_INPUT_SIZE;
    ny = (long)batch * (STP_HOST_FINAL_READOUT ? 1 : steps) * STP_HOST_OUTPUT_SIZE;
    ns = (long)batch * steps * STP_HOST_STATE_SIZE;
    x = stp_host_alloc16(nx);
    y = stp_host_alloc16(ny);
    states = stp_host_alloc16(ns);
    stp_host_read16(argv[1], x, nx);
    if (stp_host_run_batch(x, batch, steps, y, states, rank) != 0) return STP_HOST_EXIT_STATUS;
    stp_host_write16(argv[2], y, ny, states, ns);
    free(x);
    free(y);
    free(states);
    return 0;
}
