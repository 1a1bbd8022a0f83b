/* stp_board_startup.c - Cortex-M vector table and reset handler for the qemu boards.
 * Copies .data, zeroes .bss, enables the FPU when the build uses it, calls main() and
 * reports its return value as the exit status. A fault ends the run with status 127
 * (HardFault, e.g. a DSP instruction on a Cortex-M3) or 126 (any other exception). */
#include <stdint.h>
#include "stp_board_io.h"

extern uint32_t __stp_stack_top, __stp_data_load, __stp_data_start, __stp_data_end;
extern uint32_t __stp_bss_start, __stp_bss_end;
extern int main(void);

void stp_board_reset(void);
void stp_board_hardfault(void);
void stp_board_other_exception(void);

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
    stp_io_exit(main());
    for (;;) {
    }
}

void stp_board_hardfault(void) { stp_io_exit(127); }
void stp_board_other_exception(void) { stp_io_exit(126); }
