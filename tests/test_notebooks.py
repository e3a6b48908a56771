"""Every walkthrough runs top to bottom in its quick mode, and the committed ones carry the
outputs of a full run: plots, a measured run time, no errors."""
import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MARK = "**Measured run time (full mode):**"


def outputs(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


@pytest.fixture(scope="module")
def shared_runs(tmp_path_factory):
    """One runs folder for all notebooks: later ones reuse the small runs an earlier one trained."""
    return tmp_path_factory.mktemp("notebook-runs")


def test_there_are_seven_walkthroughs():
    assert len(NOTEBOOKS) == 7


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_quick_mode(path, shared_runs, monkeypatch):
    monkeypatch.setenv("DLM_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("DLM_NOTEBOOK_OUT", str(shared_runs))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    assert not [o for o in outputs(nb) if o.output_type == "error"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_shows_a_full_run(path):
    nb = nbformat.read(path, as_version=4)
    outs = outputs(nb)
    assert not [o for o in outs if o.output_type == "error"], "error outputs are committed"
    assert any("image/png" in o.get("data", {}) for o in outs), "no plot in the committed outputs"
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code"), "not every cell was run"
    head = nb.cells[0].source
    assert MARK in head and "not measured yet" not in head, "no measured run time at the top"
    assert not any("quick (smoke-test) mode" in o.get("text", "") for o in outs), "committed from a quick run"


def test_execute_stamps_the_run_time_in_the_first_cell():
    import importlib.util
    spec = importlib.util.spec_from_file_location("nb_execute", ROOT / "notebooks" / "execute.py")
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# T\n\n{MARK} not measured yet\n\nbody")])
    ex.set_runtime(nb, ex.stamp(125.4, 3.0))
    head = nb.cells[0].source.splitlines()
    assert head[0] == "# T" and head[-1] == "body" and len(head) == 5
    assert head[2].startswith(MARK) and "2 min 05 s" in head[2] and "load average 3.0" in head[2]
    ex.set_runtime(nb, ex.stamp(5, 0.5))                  # a re-run replaces the line, never adds one
    assert nb.cells[0].source.count(MARK) == 1 and "0 min 05 s" in nb.cells[0].source


FIGURE_REPR = re.compile(r"<(?:matplotlib\.figure\.)?Figure size \d+(?:\.\d+)?x\d+(?:\.\d+)? with \d+ Axes>")
PROGRESS_BAR = re.compile(r"\d+%\|")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_figure_cell_shows_its_image(path):
    """A cell whose output is a figure's repr must show that figure as an image (not only the repr)."""
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        outs = cell.get("outputs", [])
        reprs = [o for o in outs if FIGURE_REPR.search(o.get("data", {}).get("text/plain", "")
                                                        or o.get("text", ""))]
        if reprs:
            assert any("image/png" in o.get("data", {}) for o in outs), \
                f"code cell {i} shows {FIGURE_REPR.search(str(reprs[0])).group(0)} but no image"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_outputs_are_clean_and_figures_readable(path):
    """No progress-bar residue on stderr, and figures no wider than a page at screen resolution."""
    import base64
    import struct
    nb = nbformat.read(path, as_version=4)
    for o in outputs(nb):
        if o.output_type == "stream" and o.name == "stderr":
            assert not PROGRESS_BAR.search(o.text), f"a progress bar is committed: {o.text[:60]!r}"
        png = o.get("data", {}).get("image/png")
        if png:
            width = struct.unpack(">I", base64.b64decode(png)[16:20])[0]
            assert width <= 1500, f"a figure {width} px wide is shown shrunk"


def test_execute_strips_progress_bars_and_keeps_other_output():
    import importlib.util
    spec = importlib.util.spec_from_file_location("nb_execute", ROOT / "notebooks" / "execute.py")
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    cell = nbformat.v4.new_code_cell("train()")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="\rAR:  45%|████▌     | 90/200 [00:06<00:07]"),
                    nbformat.v4.new_output("stream", name="stderr", text="\n"),
                    nbformat.v4.new_output("stream", name="stderr", text="warning: something real\n"),
                    nbformat.v4.new_output("stream", name="stdout", text="done\n")]
    nb = nbformat.v4.new_notebook(cells=[cell])
    ex.strip_progress(nb)
    assert [o.text for o in nb.cells[0].outputs] == ["warning: something real\n", "done\n"]
