"""keep_freed_memory: tunes glibc's allocator once, and leaves it alone where an operator tuned it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fedpact.common import allocator

PROBE = (
    "import json\n"
    "from fedpact.common.allocator import keep_freed_memory\n"
    "first = keep_freed_memory()\n"
    "print(json.dumps({'tuned': first, 'again': keep_freed_memory()}))\n"
)


def run_probe(**env: str) -> dict[str, bool]:
    clean = {k: v for k, v in os.environ.items() if k not in (*allocator.GLIBC_VARIABLES, allocator.OPT_OUT)}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True,
                         timeout=60, check=True)  # fmt: skip
    import json

    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
                           reason="mallopt is glibc's")  # fmt: skip


@glibc
def test_a_fresh_process_is_tuned_once() -> None:
    assert run_probe() == {"tuned": True, "again": True}


@glibc
@pytest.mark.parametrize("name", allocator.GLIBC_VARIABLES)
def test_an_operators_own_glibc_settings_win(name: str) -> None:
    value = "glibc.malloc.trim_threshold=1048576" if name == "GLIBC_TUNABLES" else "1048576"
    assert run_probe(**{name: value}) == {"tuned": False, "again": False}


def test_the_opt_out_leaves_the_allocator_alone() -> None:
    assert run_probe(**{allocator.OPT_OUT: "0"}) == {"tuned": False, "again": False}
