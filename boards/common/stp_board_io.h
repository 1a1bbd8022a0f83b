/* stp_board_io.h - the few services a board driver needs, same API on host and target.
 *
 * Host build (no STP_BOARD_BARE): stdio + the process exit status.
 * Target build (STP_BOARD_BARE): ARM semihosting, no C library at all
 *   stdout = SYS_OPEN(":tt", "w") + SYS_WRITE (SYS_WRITE0 would land on qemu's stderr),
 *   exit   = SYS_EXIT_EXTENDED (plain SYS_EXIT can only report 0 or 1).
 * The frame markers are empty, never-inlined functions: the instruction-count plugin
 * counts the guest instructions executed between a call of the begin and the end marker.
 */
#ifndef STP_BOARD_IO_H
#define STP_BOARD_IO_H

#include <stddef.h>
#include <stdint.h>

void stp_io_write(const char *buf, size_t n);   /* append bytes to stdout */
void stp_io_exit(int code);                     /* terminate with this status (0..255) */
void stp_io_write_stderr(const char *buf, size_t n);   /* target only: diagnostics, not stdout */

void stp_board_frame_begin(void);               /* instruction-count markers */
void stp_board_frame_end(void);

#endif
