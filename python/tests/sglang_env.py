"""Imports SGLang's real HiCache interface without running `sglang/__init__.py`, which
needs triton and CUDA packages that do not install on a CPU machine: a bare `sglang`
package is registered in sys.modules with the installed package's path."""
import importlib.util
import sys
import types


def install() -> None:
    if "sglang" in sys.modules:
        return
    spec = importlib.util.find_spec("sglang")
    if spec is None:
        raise ImportError("sglang is not installed: run scripts/python-env.sh")
    pkg = types.ModuleType("sglang")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__ = spec
    sys.modules["sglang"] = pkg
