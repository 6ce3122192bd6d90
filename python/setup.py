"""Builds the wheel with libcistern inside.

The shared library comes from $CISTERN_LIBRARY if set, else from the repository's
release build (`make python-lib` builds it self-contained, with the Swift runtime
linked in statically), and is copied to cistern/_lib/libcistern.so with the C header.
"""
import os
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def find_library() -> Path:
    explicit = os.environ.get("CISTERN_LIBRARY")
    if explicit:
        return Path(explicit)
    built = REPO / ".build-ffi" / "release" / "libCisternFFI.so"
    if not built.exists():
        subprocess.check_call(
            ["swift", "build", "-c", "release", "--product", "CisternFFI", "-Xswiftc", "-static-stdlib",
             "--scratch-path", str(REPO / ".build-ffi")], cwd=REPO)
    return built


try:  # the wheel holds a Linux shared library: tag it for the platform, any Python 3
    from wheel.bdist_wheel import bdist_wheel as _bdist_wheel
except ImportError:  # pragma: no cover
    _bdist_wheel = None

if _bdist_wheel is not None:
    class PlatformWheel(_bdist_wheel):
        def finalize_options(self):
            super().finalize_options()
            self.root_is_pure = False

        def get_tag(self):
            return ("py3", "none", super().get_tag()[2])
else:
    PlatformWheel = None


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        if os.environ.get("CISTERN_SKIP_LIBRARY") == "1":
            return  # an editable install: the package finds the repository's build itself
        target = Path(self.build_lib) / "cistern"
        (target / "_lib").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(find_library(), target / "_lib" / "libcistern.so")
        if shutil.which("strip"):  # debug symbols are two thirds of the file
            subprocess.check_call(["strip", "--strip-unneeded", str(target / "_lib" / "libcistern.so")])
        shutil.copyfile(REPO / "Sources" / "CisternFFI" / "include" / "cistern.h", target / "cistern.h")


commands = {"build_py": BuildWithLibrary}
if PlatformWheel is not None:
    commands["bdist_wheel"] = PlatformWheel
setup(cmdclass=commands)
