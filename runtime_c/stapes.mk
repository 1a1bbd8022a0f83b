# The stapes C runtime for Make-based firmware projects (GNU Make).
#
# Two lines add the runtime and one emitted model (`stapes emit MODEL --out model/` writes
# model/<prefix>.c/.h and a copy of this folder as model/runtime/):
#
#   include model/runtime/stapes.mk
#   app.elf: main.c model/model.c $(STAPES_SRCS)   # compile with $(STAPES_CFLAGS) -Imodel
#
# Set STAPES_COUNT_OPS=1 or STAPES_CHECKS=1 before the include for the counting or checked
# build (see CMakeLists.txt); the arithmetic and its bits do not depend on them.

STAPES_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))

# Every source in src/ except the op counters, which only the counting build needs.
STAPES_SRCS := $(filter-out %/stp_ops.c,$(sort $(wildcard $(STAPES_DIR)/src/*.c)))
STAPES_CFLAGS := -std=c99 -I$(STAPES_DIR)/include

ifeq ($(STAPES_COUNT_OPS),1)
STAPES_SRCS += $(STAPES_DIR)/src/stp_ops.c
STAPES_CFLAGS += -DSTP_COUNT_OPS
endif
ifeq ($(STAPES_CHECKS),1)
STAPES_CFLAGS += -DSTP_CHECKS
endif
