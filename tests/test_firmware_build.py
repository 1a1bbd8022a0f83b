"""A firmware project without Python: an emitted model folder built with the runtime's CMake file
and with its Make fragment, for the Cortex-M4 board, run under qemu, equal to the reference."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from stapes.emit.model_c import summary
from stapes.fixed.compare import first_mismatch
from stapes.host.random_models import random_qgraph
from stapes.studies.deploy import write_c_folder
from stapes.target import drivers, profile, qemu, run, toolchain

NO_TOOLCHAIN = toolchain.toolchain_missing()
pytestmark = [
    pytest.mark.board,
    pytest.mark.skipif(NO_TOOLCHAIN is not None, reason=f"no cross toolchain: {NO_TOOLCHAIN}"),
]
BOARD = profile.load_board("mps2-an386")
FRAMES = 8
# The board's startup, semihosting and frame markers: what any bare-metal project brings itself.
BOARD_SOURCES = ("stp_board_startup.c", "stp_board_semihost.c", "stp_board_markers.c")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder: `model/` exactly as `stapes emit` writes it, and a golden-input main.c."""
    q = random_qgraph(5, kind="mgu", hidden=12, inputs=3, outputs=2, rank=4)
    root = tmp_path_factory.mktemp("firmware")
    write_c_folder(q, root / "model", prefix="model")
    x = run.golden_inputs(q.input_size, FRAMES, seed=1)
    main = drivers.driver_c(
        "model_step_rank(x, state, y, scratch, 0)",
        "model.h",
        x,
        q.input_size,
        q.hidden_size,
        q.output_size,
        summary(q)["scratch_size"],
    )
    (root / "main.c").write_text(main)
    return root, q, x


def _flags() -> str:
    return " ".join(
        [*BOARD.cflags, *(f for f in toolchain.TARGET_CFLAGS if f != "-fstack-usage"), "-O2", "-DSTP_BOARD_BARE"]
    )


def _check_on_board(elf: Path, q, x) -> None:
    res = qemu.run_qemu(BOARD, elf)
    assert res.returncode == 0, f"firmware exit status {res.returncode}"
    y, h = drivers.parse_driver_output(res.stdout, q.output_size, q.hidden_size)
    y_ref, h_ref = run.reference_frames(q, x)
    mismatch = first_mismatch("states", h[None], h_ref[None]) or first_mismatch("outputs", y[None], y_ref[None])
    assert mismatch is None, mismatch


def test_cmake_project_runs_the_model_bit_exact(project, tmp_path):
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    root, q, x = project
    common = profile.common_dir()
    (root / "CMakeLists.txt").write_text(
        f"""cmake_minimum_required(VERSION 3.13)
project(firmware C)
add_executable(firmware.elf main.c {" ".join(f"{common}/{s}" for s in BOARD_SOURCES)})
target_include_directories(firmware.elf PRIVATE {common})
add_subdirectory(model/runtime stapes)
stapes_add_model(firmware.elf model/model.c)
target_link_options(firmware.elf PRIVATE -nostdlib -T{common}/mps2.ld)
target_link_libraries(firmware.elf PRIVATE gcc)
"""
    )
    build = tmp_path / "build"
    configure = [
        "cmake",
        "-S",
        str(root),
        "-B",
        str(build),
        "-DCMAKE_SYSTEM_NAME=Generic",
        "-DCMAKE_SYSTEM_PROCESSOR=arm",
        "-DCMAKE_C_COMPILER=arm-none-eabi-gcc",
        "-DCMAKE_TRY_COMPILE_TARGET_TYPE=STATIC_LIBRARY",
        f"-DCMAKE_C_FLAGS={_flags()} -Wall -Wextra -Wconversion -Werror",
    ]
    for cmd in (configure, ["cmake", "--build", str(build)]):
        p = subprocess.run(cmd, capture_output=True, text=True)
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    _check_on_board(build / "firmware.elf", q, x)


def test_make_project_runs_the_model_bit_exact(project, tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    root, q, x = project
    common = profile.common_dir()
    board_sources = " ".join(f"{common}/{s}" for s in BOARD_SOURCES)
    (root / "Makefile").write_text(
        f"""CC = arm-none-eabi-gcc
CFLAGS = {_flags()} -Wall -Wextra -Wconversion -Werror -I{common}
include model/runtime/stapes.mk

$(OUT)/firmware.elf: main.c model/model.c $(STAPES_SRCS) {board_sources}
\t$(CC) $(CFLAGS) $(STAPES_CFLAGS) -Imodel $^ -nostdlib -T{common}/mps2.ld -lgcc -o $@
"""
    )
    p = subprocess.run(["make", "-C", str(root), f"OUT={tmp_path}"], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    _check_on_board(tmp_path / "firmware.elf", q, x)
