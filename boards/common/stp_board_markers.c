/* stp_board_markers.c - frame markers for the instruction counter (see stp_board_io.h).
 * Own translation unit + noinline + an asm barrier, so the calls survive -O2 and LTO-free
 * builds keep them at distinct addresses the plugin can watch. */
#include "stp_board_io.h"

__attribute__((noinline)) void stp_board_frame_begin(void) { __asm__ volatile("" ::: "memory"); }
__attribute__((noinline)) void stp_board_frame_end(void) { __asm__ volatile("" ::: "memory"); }
