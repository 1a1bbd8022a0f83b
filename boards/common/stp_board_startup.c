/* stp_board_startup.c - reset handler for the qemu boards (and the Cortex-M vector table).
 * Copies .data, zeroes .bss, enables the FPU when the build uses it, paints the stack window,
 * calls main(), reports the stack's peak use on stderr ("stp-stack-peak=<bytes>") and main's
 * return value as the exit status. A fault ends the run with status 127 (HardFault, e.g. a DSP
 * instruction on a Cortex-M3) or 126 (any other exception). On RISC-V the entry point and trap
 * vector are in stp_board_start_riscv.S, which sets sp and mtvec and jumps here. */
#include <stdint.h>
#include "stp_board_io.h"

extern uint32_t __stp_stack_top, __stp_data_load, __stp_data_start, __stp_data_end;
extern uint32_t __stp_bss_start, __stp_bss_end, __stp_stack_paint_bottom;
extern int main(void);

void stp_board_reset(void);
void stp_board_hardfault(void);
void stp_board_other_exception(void);

#if defined(__arm__)
typedef void (*stp_vector_t)(void);

__attribute__((section(".stp_vectors"), used))
const stp_vector_t stp_board_vectors[16] = {
    (stp_vector_t)(uintptr_t)&__stp_stack_top, /* initial MSP */
    stp_board_reset,
    stp_board_other_exception, /* NMI */
    stp_board_hardfault,
    stp_board_other_exception, /* MemManage */
    stp_board_other_exception, /* BusFault */
    stp_board_other_exception, /* UsageFault */
    0, 0, 0, 0,
    stp_board_other_exception, /* SVCall */
    stp_board_other_exception, /* DebugMon */
    0,
    stp_board_other_exception, /* PendSV */
    stp_board_other_exception, /* SysTick */
};
#endif

#define STP_STACK_PAINT 0x57AC5EEDu

/* Below the reset handler's own frame, every word of the stack window gets the paint value;
 * after main() the lowest word that lost it is the deepest the stack went. */
__attribute__((optimize("no-tree-loop-distribute-patterns"), noinline))
static void paint_stack(void)
{
    uint32_t *sp;
#if defined(__riscv)
    __asm__ volatile("mv %0, sp" : "=r"(sp));
#else
    __asm__ volatile("mov %0, sp" : "=r"(sp));
#endif
    for (uint32_t *w = &__stp_stack_paint_bottom; w < sp - 8; ++w)
        *w = STP_STACK_PAINT;
}

__attribute__((noinline))
static void report_stack_peak(void)
{
    const uint32_t *w = &__stp_stack_paint_bottom;
    while (w < &__stp_stack_top && *w == STP_STACK_PAINT)
        ++w;
    uint32_t peak = (uint32_t)((uintptr_t)&__stp_stack_top - (uintptr_t)w);
    /* copied by hand: a partly initialised array becomes a memset call on ARMv6-M, and there
       is no libc here */
    static const char prefix[] = "stp-stack-peak=";
    char line[32];
    char digits[12];
    size_t n = 0, len = 0;
    while (prefix[len] != '\0') {
        line[len] = prefix[len];
        ++len;
    }
    do {
        digits[n++] = (char)('0' + peak % 10u);
        peak /= 10u;
    } while (peak != 0u);
    while (n != 0u)
        line[len++] = digits[--n];
    line[len++] = '\n';
    stp_io_write_stderr(line, len);
}

/* gcc would turn the copy loops into memcpy/memset calls; there is no libc here. */
__attribute__((optimize("no-tree-loop-distribute-patterns"), noreturn))
void stp_board_reset(void)
{
#if defined(__ARM_FP)
    volatile uint32_t *cpacr = (volatile uint32_t *)0xE000ED88u;
    *cpacr |= 0xFu << 20; /* CP10/CP11 full access before the first FP instruction */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    uint32_t *src = &__stp_data_load;
    for (uint32_t *dst = &__stp_data_start; dst < &__stp_data_end;)
        *dst++ = *src++;
    for (uint32_t *dst = &__stp_bss_start; dst < &__stp_bss_end;)
        *dst++ = 0u;
    paint_stack();
    int status = main();
    report_stack_peak();
    stp_io_exit(status);
    for (;;) {
    }
}

void stp_board_hardfault(void) { stp_io_exit(127); }
void stp_board_other_exception(void) { stp_io_exit(126); }
