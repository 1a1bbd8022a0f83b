/* stp_board_semihost.c - target implementation of stp_board_io.h over ARM semihosting
 * (M-profile: BKPT 0xAB, operation in r0, parameter block in r1; RISC-V: the same operations
 * through the slli/ebreak/srai sequence, operation in a0, block in a1). No C library. */
#include "stp_board_io.h"

#define SH_SYS_OPEN 0x01
#define SH_SYS_CLOSE 0x02
#define SH_SYS_WRITE 0x05
#define SH_SYS_EXIT_EXTENDED 0x20
#define SH_ADP_APPLICATION_EXIT 0x20026u
#define SH_OPEN_MODE_W 4u      /* ":tt" opened for writing is stdout ... */
#define SH_OPEN_MODE_A 8u      /* ... and for appending, stderr */

static int32_t sh_call(int32_t op, const void *block)
{
#if defined(__riscv)
    /* qemu recognises the trap only as these three uncompressed instructions within one page:
       the 16-byte alignment keeps them together */
    register int32_t a0 __asm__("a0") = op;
    register const void *a1 __asm__("a1") = block;
    __asm__ volatile(".option push\n\t.balign 16\n\t.option norvc\n\t"
                     "slli zero, zero, 0x1f\n\tebreak\n\tsrai zero, zero, 7\n\t.option pop"
                     : "+r"(a0) : "r"(a1) : "memory");
    return a0;
#else
    register int32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = block;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
#endif
}

static int32_t sh_console_handle(uint32_t mode)
{
    /* Opened (and closed) on every write: a cached handle would be a mutable global, and the
     * two extra traps are cheap next to the write; writes happen outside counted frames. */
    static const char tt[] = ":tt";
    const uint32_t block[3] = {(uint32_t)(uintptr_t)tt, mode, (uint32_t)(sizeof tt - 1u)};
    return sh_call(SH_SYS_OPEN, block);
}

static void sh_write(uint32_t mode, const char *buf, size_t n)
{
    int32_t handle = sh_console_handle(mode);
    if (handle < 0 || n == 0u)
        return;
    const uint32_t block[3] = {(uint32_t)handle, (uint32_t)(uintptr_t)buf, (uint32_t)n};
    (void)sh_call(SH_SYS_WRITE, block);
    const uint32_t close_block[1] = {(uint32_t)handle};
    (void)sh_call(SH_SYS_CLOSE, close_block);
}

void stp_io_write(const char *buf, size_t n) { sh_write(SH_OPEN_MODE_W, buf, n); }
void stp_io_write_stderr(const char *buf, size_t n) { sh_write(SH_OPEN_MODE_A, buf, n); }

void stp_io_exit(int code)
{
    const uint32_t block[2] = {SH_ADP_APPLICATION_EXIT, (uint32_t)code};
    for (;;)
        (void)sh_call(SH_SYS_EXIT_EXTENDED, block);
}
