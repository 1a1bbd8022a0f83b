/* stp_board_host_io.c - host implementation of stp_board_io.h (stdio, exit status). */
#include <stdio.h>
#include <stdlib.h>
#include "stp_board_io.h"

void stp_io_write(const char *buf, size_t n) { fwrite(buf, 1, n, stdout); }

void stp_io_exit(int code)
{
    fflush(stdout);
    exit(code);
}
