"""The benchmark scripts run as `python benchmarks/NAME.py`, which puts benchmarks/ first on sys.path: a script
named like a standard-library module (ssl.py, statistics.py ...) would replace that module for every
benchmark and every library it imports (seen: benchmarks/ssl.py broke `import ssl` inside urllib)."""

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_no_benchmark_script_shadows_a_standard_module():
    shadowing = sorted(path.name for path in BENCHMARKS.glob("*.py") if path.stem in sys.stdlib_module_names)
    assert not shadowing, f"rename these benchmark scripts (they hide standard modules): {shadowing}"
