"""The "Speed-quality explorer" tab: a sweep over models, strategies and step counts, plotted as Gen PPL
against network evaluations per token (or measured tokens/s) with the Pareto frontier (the
computation is gui/explorer.py)."""
from __future__ import annotations

import gradio as gr
import pandas as pd

from toolkit.errors import UserError
from toolkit.evaluation.metrics import METRICS

from gui import explorer
from gui.denoise_tab import number_box
from gui.live import Settings, whole_number
from gui.models import ModelRegistry
from gui.policy import AccessPolicy, client_of
from gui.strategies import DEFAULT_STRATEGY, strategy_names

DEFAULT_STEP_COUNTS = ", ".join(map(str, explorer.DEFAULT_STEP_COUNTS))


def _table(rows):
    return pd.DataFrame(rows, columns=explorer.COLUMNS)


def default_selection(registry: ModelRegistry) -> tuple[list[str], list[str]]:
    """The models and strategies ticked by default, from the registry: the first four models, the
    default strategy and the other one most of them offer (gui/explorer.py, default_strategies)."""
    keys = registry.keys[:4]
    return keys, explorer.default_strategies([registry.get(k).family for k in keys])


def explorer_tab(registry: ModelRegistry, choices: list, length_max: int,
                 policy: AccessPolicy | None = None) -> gr.CheckboxGroup:
    """Lay out the tab (inside an open gr.Blocks), wire the sweep; returns its model selector."""
    ppl, ent = METRICS["gen_ppl"], METRICS["entropy"]
    with gr.Tab("Speed-quality explorer"):
        gr.Markdown(
            f"For each model, decoding strategy and step count: sample, time it ({explorer.REPEATS} identical runs: "
            f"the median, with the range as error bars), score **{ppl.label}** under the AR judge "
            f"(`{registry.evaluator_key}`) and unigram **{ent.label}**. Real text calibrates both: the judge's "
            f"validation text, cut to the same length, gives the dotted Gen PPL line, and samples whose entropy "
            f"is below {explorer.REPETITIVE_FRACTION:.0%} of its entropy are marked repetitive (x) and kept off the "
            "frontier (low Gen PPL from repetition is not quality). The judge's own samples are scored by "
            f"themselves: marked (star) and kept off the frontier. The dashed staircase is the frontier against "
            "**network evaluations per generated token** (by default: it depends on the sampler only, so the same "
            "sweep draws the same frontier on any machine); against measured tokens/s a point is beaten only by "
            f"one no worse in Gen PPL and more than {explorer.SPEED_TIE:.0%} faster (identical sweeps on a shared "
            "machine differ that much). Labels: steps taken: entropy (nats).")
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                ticked_models, ticked_strategies = default_selection(registry)
                x_models = gr.CheckboxGroup(choices, value=ticked_models, label="Models")
                x_steps = gr.Textbox(DEFAULT_STEP_COUNTS, label="Step counts", elem_id="x-steps")
                x_length = number_box(min(64, length_max), "Length (tokens)", 1, length_max, "x-length")
                x_samples = number_box(2, "Samples per point", 1, explorer.MAX_SAMPLES, "x-samples")
                x_samplers = gr.CheckboxGroup(strategy_names(), value=ticked_strategies, label="Decoding strategies",
                                              info="each with its default options; skipped where a family lacks it",
                                              elem_id="x-samplers")
                x_axis = gr.Radio([(label, key) for key, (label, _) in explorer.AXES.items()],
                                  value=explorer.DEFAULT_AXIS, label="Frontier against", elem_id="x-axis")
                x_seed = gr.Number(0, label="Seed", precision=0)
                x_go = gr.Button("Run sweep", variant="primary", elem_id="x-go")
                x_status = gr.Markdown("", label="Status", elem_id="x-status")
            with gr.Column(scale=2):
                x_plot = gr.Plot(label="Gen PPL vs cost", show_label=False, elem_id="x-plot")
                x_table = gr.Dataframe(headers=explorer.COLUMNS, label="Results", interactive=False, elem_id="x-table")

    policy = policy or AccessPolicy()

    def run_sweep(request: gr.Request, models, step_counts, length, samples, seed, strategies=(DEFAULT_STRATEGY,),
                  axis=explorer.DEFAULT_AXIS):
        """Sweep the models over strategies and step counts; stream (plot, table, status)."""
        try:
            counts = explorer.parse_steps(step_counts)
            settings = Settings(length=whole_number(length, "length"), seed=whole_number(seed or 0, "seed"))
            strategies = list(strategies or [DEFAULT_STRATEGY])
            rows, ref = [], None
            with policy.run_slot(client_of(request)):
                for rows in explorer.sweep(registry, list(models or []), counts, settings,
                                           whole_number(samples, "samples"), strategies, axis=axis):
                    ref = ref or explorer.reference(registry.evaluator(), settings.base.length)
                    yield (explorer.explorer_plot(rows, registry.evaluator_key, ref, axis=axis), _table(rows),
                           f"Running… {len(rows)} point(s), each timed {min(r['runs'] for r in rows)} "
                           f"of {explorer.REPEATS} times")
            note = f" Reference: {ref.describe()}." if ref else ""
            yield (explorer.explorer_plot(rows, registry.evaluator_key, ref, axis=axis), _table(rows),
                   f"Done: {len(rows)} point(s).{note}")
        except UserError as e:
            gr.Warning(str(e))
            yield gr.update(), gr.update(), f"⚠️ {e}"

    x_go.click(run_sweep, [x_models, x_steps, x_length, x_samples, x_seed, x_samplers, x_axis],
               [x_plot, x_table, x_status],
               api_name="explore", show_progress="minimal")
    return x_models
