/* stp_host_io.h -- the file protocol of the sanitizer executables (stapes.host.sanitize).
 *
 * argv ends in: in.bin out.bin batch steps rank. in.bin holds int16 x (batch, steps, I); the
 * program writes y, then states (batch, steps, N), both int16, to out.bin. Exit status 0, else
 * one of the STP_HOST_EXIT_* codes below (a sanitizer report exits on its own). */
#ifndef STP_HOST_IO_H
#define STP_HOST_IO_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

enum {
    STP_HOST_EXIT_USAGE = 2,   /* wrong argument count */
    STP_HOST_EXIT_MODEL = 3,   /* model file missing or malformed */
    STP_HOST_EXIT_MEMORY = 4,  /* out of memory */
    STP_HOST_EXIT_INPUT = 5,   /* in.bin missing or short */
    STP_HOST_EXIT_STATUS = 6,  /* the runtime returned a non-zero status */
    STP_HOST_EXIT_OUTPUT = 7   /* out.bin cannot be written */
};

/* A buffer of n int16 (at least one byte, so malloc(0) is never asked for); exits on failure. */
static int16_t *stp_host_alloc16(long n)
{
    int16_t *p = malloc(sizeof(int16_t) * (size_t)(n > 0 ? n : 1));
    if (!p) exit(STP_HOST_EXIT_MEMORY);
    return p;
}

/* Read exactly n int16 from `path`; exits on failure. */
static void stp_host_read16(const char *path, int16_t *x, long n)
{
    FILE *f = fopen(path, "rb");
    if (!f) exit(STP_HOST_EXIT_INPUT);
    if (fread(x, sizeof(int16_t), (size_t)n, f) != (size_t)n) exit(STP_HOST_EXIT_INPUT);
    fclose(f);
}

/* Write y (ny int16) then states (ns int16) to `path`; exits on failure. */
static void stp_host_write16(const char *path, const int16_t *y, long ny, const int16_t *states, long ns)
{
    FILE *f = fopen(path, "wb");
    if (!f) exit(STP_HOST_EXIT_OUTPUT);
    if (fwrite(y, sizeof(int16_t), (size_t)ny, f) != (size_t)ny
        || fwrite(states, sizeof(int16_t), (size_t)ns, f) != (size_t)ns)
        exit(STP_HOST_EXIT_OUTPUT);
    if (fclose(f) != 0) exit(STP_HOST_EXIT_OUTPUT);
}

#endif /* STP_HOST_IO_H */
