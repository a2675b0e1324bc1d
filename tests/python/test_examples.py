"""The Python examples (examples/python) run end to end on tiny models.

Each example's main() is called in-process with small arguments; its return
value is checked, so an example that runs but computes nonsense fails too.
"""

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
moert = pytest.importorskip("moert", reason="build the moert module (scripts/build.sh)",
                            exc_type=ImportError)

EXAMPLES = ROOT / "examples" / "python"


def _example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generate_example_matches_the_model():
    tokens = _example("generate").main(["--max-new-tokens", "6", "--prompt-ids", "5,6,7"])
    assert len(tokens) == 6
    assert all(isinstance(t, int) and 0 <= t < 512 for t in tokens)


def test_switch_backend_example_agrees_on_every_device():
    errors = _example("switch_backend").main([])
    # every available device, the reference among them (exactly 0 there)
    assert "reference:0" in errors and errors["reference:0"] == 0.0
    for device, err in errors.items():
        # f32 checkpoint, 8-token prompt: the f32 tolerance of test_backend_models.py
        assert err <= 1e-4, (device, err)


def test_compare_example_writes_table_json_and_plot(tmp_path):
    plot = tmp_path / "latency.png"
    out = tmp_path / "report.json"
    args = ["--prompt-tokens", "8", "--new-tokens", "4", "--json", str(out)]
    has_matplotlib = importlib.util.find_spec("matplotlib") is not None
    if has_matplotlib:
        args += ["--plot", str(plot)]
    report = _example("compare_backends").main(args)
    rows = report.to_dict()["rows"]
    assert {r["backend"] for r in rows} >= {"reference:0"}
    assert all("error" not in r for r in rows), rows
    assert out.read_text().startswith("{")
    if has_matplotlib:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert plot.stat().st_size > 5000  # a drawn chart, not an empty canvas
