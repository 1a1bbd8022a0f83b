/* stp_ops.c -- the op counters, the runtime's only mutable global, present only under
 * STP_COUNT_OPS (a counting build; numerics are identical with and without it). */
#include "stp_fixed.h"

#ifdef STP_COUNT_OPS
stp_op_counts_t stp_ops;
#else
typedef int stp_ops_disabled; /* keeps this translation unit non-empty (ISO C) */
#endif
