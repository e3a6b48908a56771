"""One palette and marker set (toolkit/plotting.py) for every figure: the app's run plot and panels, the
explorer, and the committed figure of notebook 01 (read back from its PNG output)."""
from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest

from toolkit.families import REGISTRY
from toolkit.plotting import PALETTE, family_colour, family_palette, run_styles, series_style, strategy_marker
from toolkit.samplers import DEFAULT, names

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def test_families_strategies_and_variants_are_told_apart():
    assert len({family_colour(f) for f in REGISTRY}) == len(REGISTRY)
    assert len({strategy_marker(s) for s in names()}) == len(names())
    assert strategy_marker(None) == strategy_marker(DEFAULT)
    style = series_style("duo", "ancestral", 1)
    assert style == {"color": family_colour("duo"), "marker": strategy_marker("ancestral"), "ls": "--"}
    runs = run_styles({"AR": "ar", "MDLM (NELBO)": "mdlm", "MDLM (low-var)": "mdlm", "Duo": "duo", "Eso-LM": "esolm"})
    assert runs["MDLM (NELBO)"]["color"] == runs["MDLM (low-var)"]["color"] == family_colour("mdlm")
    assert runs["MDLM (NELBO)"]["ls"] != runs["MDLM (low-var)"]["ls"]
    assert runs["MDLM (low-var)"]["color"] != runs["Duo"]["color"]      # a variant never takes another family's
    assert family_palette(["esolm", "mdlm"]) == {"esolm": family_colour("esolm"), "mdlm": family_colour("mdlm")}
    assert family_palette({"Eso-LM": "esolm"}) == {"Eso-LM": family_colour("esolm")}


def test_app_and_explorer_figures_draw_with_the_palette(tiny_checkpoint):
    """The app's per-run plot colours each model's bars by its family; the explorer's series use series_style."""
    import torch
    from matplotlib.colors import to_hex

    from gui import explorer, render
    from gui.live import Settings, interleave, start
    from gui.models import ModelRegistry
    torch.set_num_threads(1)
    registry = ModelRegistry([tiny_checkpoint(f) for f in ("mdlm", "duo")], evaluator=None)
    runs = start(registry, registry.keys, Settings(length=8, steps=4))
    for _ in interleave(runs):
        pass
    fig = render.run_plot(runs)
    bars = [ax for ax in fig.axes if ax.patches]
    assert [to_hex(ax.patches[0].get_facecolor()) for ax in bars] == [family_colour("mdlm"), family_colour("duo")]
    html = render.render_panel(runs[1])
    assert f'data-colour="{family_colour("duo")}"' in html
    rows = [{"model": m, "family": f, "sampler": s, "nfe": 4, "steps": 4, "gen_ppl": 50.0, "tokens_per_s": 10.0}
            for m, f, s in [("a", "mdlm", "ancestral"), ("a", "mdlm", "remdm"), ("b", "mdlm", "ancestral")]]
    styles = {label: style for label, _, style in explorer.series(rows)}
    assert styles == {"a": series_style("mdlm", "ancestral", 0), "a · remdm": series_style("mdlm", "remdm", 0),
                      "b": series_style("mdlm", "ancestral", 1)}


def figure_pixels(notebook: str, needle: str):
    """The RGB pixels of the committed PNG output of the code cell containing `needle`."""
    import nbformat
    import numpy as np
    from PIL import Image
    nb = nbformat.read(NOTEBOOKS / notebook, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and needle in c.source)
    png = next(o["data"]["image/png"] for o in cell.outputs if "image/png" in o.get("data", {}))
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(png))).convert("RGB")).reshape(-1, 3).astype(int)


def count_colour(pixels, hex_colour: str, tolerance: int = 6) -> int:
    rgb = [int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)]
    return int((abs(pixels - rgb).max(axis=1) <= tolerance).sum())


@pytest.mark.parametrize("notebook,needle,families", [
    ("01_quickstart.ipynb", "family_palette(", tuple(REGISTRY)),
    ("03_training.ipynb", "run_styles(", tuple(REGISTRY)),
])
def test_committed_notebook_figures_use_the_family_palette(notebook, needle, families):
    """Every family's colour is drawn in the figure, and no colour of the palette that belongs to no
    family shown (seaborn's own order gave Eso-LM #d55e00 and MDLM low-var Duo's green)."""
    pixels = figure_pixels(notebook, needle)
    for f in families:
        assert count_colour(pixels, family_colour(f)) > 50, (notebook, f)
    shown = {family_colour(f) for f in REGISTRY}
    unused = [c for c in PALETTE if c not in shown and len({c[1:3], c[3:5], c[5:7]}) > 1]   # greys: axes and text
    for c in unused:
        assert count_colour(pixels, c) < 10, (notebook, c)
