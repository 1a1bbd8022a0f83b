/* stp_board_start_riscv.S - entry point and trap vector for the bare-metal RISC-V boards
 * (machine mode, one hart). Sets the stack pointer and mtvec, then enters the shared reset
 * handler (stp_board_startup.c: .data copy, .bss zeroing, stack painting, main, exit status).
 * Any trap (illegal instruction, misaligned or faulting access, ecall) ends the run with exit
 * status 127 through stp_board_hardfault, as a HardFault does on the Cortex-M boards. */
    .section .stp_start, "ax"
    .globl stp_board_start
    .type stp_board_start, @function
stp_board_start:
    .option push
    .option norelax
    la sp, __stp_stack_top
    .option pop
    la t0, stp_board_trap
    .option push
    .option arch, +zicsr            /* binutils >= 2.38 split the CSR instructions off `i` */
    csrw mtvec, t0
    .option pop
    j stp_board_reset
    .size stp_board_start, . - stp_board_start

    .balign 4                       /* mtvec direct mode: the handler address is 4-aligned */
    .type stp_board_trap, @function
stp_board_trap:
    la sp, __stp_stack_top          /* the faulting context may have no usable stack */
    j stp_board_hardfault
    .size stp_board_trap, . - stp_board_trap
