/* stp_host_runtime_main.c -- the runtime as a stand-alone program that reads its model from a file.
 *
 * argv: model.txt in.bin out.bin batch steps rank (in/out: stp_host_io.h). One build serves any
 * number of models (stapes.host.run_runtime_sanitized builds it once, with ASan + UBSan).
 *
 * model.txt: whitespace-separated integers, every field of stp_model_t (stp_model.h) in
 * declaration order, nested structs in place (stapes.host.sanitize.model_text writes it):
 *   an int field:     its value;
 *   a pointer field:  the element bits (8, 16 or 32), the element count n, then n values;
 *                     n = 0 is a NULL pointer.
 * Every array gets its own exact-size allocation, so ASan sees any read past its end. */
#include "stp_host_io.h"
#include "stp_model.h"

#define STP_HOST_MAX_ARRAYS 64

static FILE *model_file;
static void *arrays[STP_HOST_MAX_ARRAYS];
static int narrays;

static long read_int(void)
{
    long v;
    if (fscanf(model_file, "%ld", &v) != 1) exit(STP_HOST_EXIT_MODEL);
    return v;
}

static int read_field(void)
{
    return (int)read_int();
}

/* A pointer field with `bits`-bit elements: an exact-size buffer of its values, NULL for none. */
static void *read_array(int bits)
{
    long n, k, v;
    void *p;
    if (read_int() != bits) exit(STP_HOST_EXIT_MODEL);
    n = read_int();
    if (n < 0 || narrays == STP_HOST_MAX_ARRAYS) exit(STP_HOST_EXIT_MODEL);
    if (n == 0) return NULL;
    p = malloc((size_t)n * (size_t)(bits / 8));
    if (!p) exit(STP_HOST_EXIT_MEMORY);
    arrays[narrays++] = p;
    for (k = 0; k < n; k++) {
        v = read_int();
        if (bits == 8)
            ((int8_t *)p)[k] = (int8_t)v;
        else if (bits == 16)
            ((int16_t *)p)[k] = (int16_t)v;
        else
            ((int32_t *)p)[k] = (int32_t)v;
    }
    return p;
}

static void read_mat(stp_mat_t *m)
{
    m->w8 = read_array(8);
    m->w16 = read_array(16);
    m->rows = read_field();
    m->cols = read_field();
}

static void read_gate(stp_gate_t *g)
{
    read_mat(&g->w);
    read_mat(&g->u);
    read_mat(&g->b);
    read_mat(&g->a);
    g->z_shift = read_array(8);
    g->x_shift = read_array(8);
    g->h_shift = read_array(8);
    g->bias = read_array(32);
    g->table = read_array(16);
}

static void read_model(const char *path, stp_model_t *m)
{
    model_file = fopen(path, "r");
    if (!model_file) exit(STP_HOST_EXIT_MODEL);
    m->cell = read_field();
    m->input_size = read_field();
    m->hidden_size = read_field();
    m->output_size = read_field();
    m->rank_max = read_field();
    read_gate(&m->gate_f);
    read_gate(&m->gate_h);
    read_mat(&m->readout.w);
    m->readout.shift = read_array(8);
    m->readout.bias = read_array(32);
    m->readout.table = read_array(16);
    m->readout.mode = read_field();
    if (fscanf(model_file, "%*d") != EOF) exit(STP_HOST_EXIT_MODEL); /* nothing may follow */
    fclose(model_file);
}

int main(int argc, char **argv)
{
    static stp_model_t m;
    int batch, steps, rank, b, rc = 0, k;
    long nx, ysize, ny, ns;
    int16_t *x, *y, *states, *state, *scratch;
    if (argc != 7) return STP_HOST_EXIT_USAGE;
    read_model(argv[1], &m);
    batch = atoi(argv[4]);
    steps = atoi(argv[5]);
    rank = atoi(argv[6]);
    nx = (long)batch * steps * m.input_size;
    ysize = (long)(m.readout.mode == STP_READOUT_FINAL ? 1 : steps) * m.output_size;
    ny = batch * ysize;
    ns = (long)batch * steps * m.hidden_size;
    x = stp_host_alloc16(nx);
    y = stp_host_alloc16(ny);
    states = stp_host_alloc16(ns);
    state = stp_host_alloc16(m.hidden_size);
    scratch = stp_host_alloc16(stp_model_scratch_size(&m)); /* the exact size: ASan checks it */
    stp_host_read16(argv[2], x, nx);
    for (b = 0; b < batch && rc == 0; b++) {
        stp_reset_s16(state, m.hidden_size);
        rc = stp_model_run(&m, x + (long)b * steps * m.input_size, steps, state, y + b * ysize,
                           states + (long)b * steps * m.hidden_size, scratch, rank);
    }
    if (rc != STP_OK) return STP_HOST_EXIT_STATUS;
    stp_host_write16(argv[3], y, ny, states, ns);
    free(x);
    free(y);
    free(states);
    free(state);
    free(scratch);
    for (k = 0; k < narrays; k++) free(arrays[k]);
    return 0;
}
