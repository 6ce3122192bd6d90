"""The C ABI from a C program compiled against the committed header."""
import subprocess
from pathlib import Path

from cistern import _native

HERE = Path(__file__).resolve().parent
HEADER_DIR = HERE.parents[1] / "Sources" / "CisternFFI" / "include"


def test_c_program_round_trip(cluster, tmp_path, ns_name):
    lib = _native.library_path()
    exe = tmp_path / "c_roundtrip"
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Werror", "-I", str(HEADER_DIR), str(HERE / "c_roundtrip.c"), "-o", str(exe),
                    str(lib), f"-Wl,-rpath,{lib.parent}"], check=True)
    out = subprocess.run([str(exe), cluster.data_dir, ns_name], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_header_declares_every_exported_function():
    header = (HEADER_DIR / "cistern.h").read_text()
    exported = subprocess.run(["nm", "-D", "--defined-only", str(_native.library_path())], capture_output=True, text=True, check=True).stdout
    names = {line.split()[-1] for line in exported.splitlines() if line.split()[-1].startswith("cistern_") and " T " in line}
    names.discard("cistern_crc32c_hardware")
    names.discard("cistern_crc32c_hardware_available")
    assert names, "no cistern_ functions exported"
    for name in sorted(names):
        assert f"{name}(" in header, f"{name} is exported but not declared in cistern.h"
