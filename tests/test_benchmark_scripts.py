"""The benchmark scripts as scripts.

They run as `python benchmarks/NAME.py`, which puts benchmarks/ first on sys.path: a script named like a
standard-library module (ssl.py, statistics.py ...) would replace that module for every benchmark and every
library it imports (seen: benchmarks/ssl.py broke `import ssl` inside urllib). And the peers comparison must
run (and say so) where the peer is not installed."""

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_no_benchmark_script_shadows_a_standard_module():
    shadowing = sorted(path.name for path in BENCHMARKS.glob("*.py") if path.stem in sys.stdlib_module_names)
    assert not shadowing, f"rename these benchmark scripts (they hide standard modules): {shadowing}"


def test_peers_quick_runs_without_the_peer_and_says_so(tmp_path):
    """Issue 25: benchmarks/peers.py --quick works where ultralytics is not installed, and the result says so."""
    import json
    import subprocess

    script = BENCHMARKS / "peers.py"
    done = subprocess.run([sys.executable, str(script), "--quick", "--rows", "classify", "--minutes", "0.05",
                           "--peer-python", str(tmp_path / "no-such-python"), "--out", str(tmp_path / "runs"),
                           "--results-dir", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads((tmp_path / "peers-quick.json").read_text())["results"][0]
    assert row["peer"]["missing"].startswith("no peer environment")
    assert 0.0 <= row["cnnkit"]["accuracy"] <= 1.0 and row["row"] == "classify/fastnet/0.05min"
    assert "no peer environment" in (tmp_path / "peers-quick.md").read_text()
