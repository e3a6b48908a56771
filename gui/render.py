"""HTML panels (one per model) and the per-run plot, drawn from the runs' traces.

A token's colour is its state at the shown step -- still masked, just revealed (was masked),
changed (was another token: how uniform-state diffusion moves), re-masked (a revealed token
sent back to [MASK] so a later step can correct it: ReMDM), stable -- and its opacity is
the model's confidence in it. Prompt tokens are set apart.
"""
from __future__ import annotations

import html
import math

from toolkit.plotting import family_colour

CSS = """
.dlm-legend span.tok { margin-right: 10px; }
.dlm-grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(210px, 1fr)); gap: 10px; }
.dlm-panel { border: 1px solid #d0d4dc; border-radius: 8px; padding: 8px 10px; background: #fff; color: #1f2328; }
.dlm-panel.dlm-error { border-color: #d1242f; }
.dlm-head { font-weight: 600; font-size: 15px; }
.dlm-swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
.dlm-desc { font-weight: 400; font-size: 11px; color: #656d76; }
.dlm-stats { font-size: 12px; color: #424a53; margin: 4px 0 6px 0; font-variant-numeric: tabular-nums; }
.dlm-text { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px; line-height: 1.9;
            white-space: pre-wrap; word-break: break-word; }
.tok { border-radius: 3px; padding: 1px 0; }
.tok.masked { background: #d8dbe0; color: #8c959f; border-right: 1px solid #fff; }
.tok.revealed { background: #a6e3a1; }
.tok.changed { background: #ffb86b; }
.tok.stable { background: transparent; }
.tok.remasked { background: #f4a6b7; color: #82071e; text-decoration: line-through; }
.tok.prompt { background: #cfe2ff; font-weight: 600; }
.dlm-final { margin-top: 6px; font-size: 12px; color: #424a53; white-space: pre-wrap; border-top: 1px dashed #d0d4dc;
             padding-top: 4px; }
.dlm-msg { color: #d1242f; font-size: 13px; }
/* one line: a wrapped status would push the panels down (messages are shown in full in the panels) */
#status p { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; margin: 0; }
"""

LEGEND = ('<div class="dlm-legend dlm-text">'
          '<span class="tok prompt">prompt</span><span class="tok masked">▒ masked</span>'
          '<span class="tok revealed">just revealed</span><span class="tok changed">changed this step</span><span class="tok remasked">re-masked</span>'
          '<span class="tok stable">stable</span> · opacity = model confidence (log scale: faint = p &lt; 0.001)</div>')


def _byte_level_alphabet() -> dict[str, int]:
    """Byte-level BPE's printable stand-in for each byte (printable Latin-1 bytes stand for
    themselves, the others take the characters from U+0100 on), inverted: character -> byte."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    moved = [b for b in range(256) if b not in kept]
    return {**{chr(b): b for b in kept}, **{chr(256 + n): b for n, b in enumerate(moved)}}


BYTE_OF = _byte_level_alphabet()


def readable(text: str) -> bool:
    """Can this decoded token be shown as is? Not if it is a broken UTF-8 piece or a control character."""
    return bool(text) and "\ufffd" not in text and all(c.isprintable() or c in "\n\t" for c in text)


def token_label(model, i: int) -> str:
    """Token `i` as a panel shows it: its text, or its bytes as `<0xE2>` (part of a multi-byte
    character, a control byte); a special token by its name."""
    text = model.token_strings([i])[0]
    if readable(text):
        return text
    raw = model.tokenizer.id_to_token(int(i)) or ""
    if not text:                         # a special token ([EOS]): decodes to nothing
        return raw or f"<id {i}>"
    if raw and all(c in BYTE_OF for c in raw):
        return "".join(f"<0x{BYTE_OF[c]:02X}>" for c in raw)
    return f"<id {i}>"


def _esc(s: str) -> str:
    return html.escape(s).replace("\n", "↵\n")


def token_states(run, index: int) -> list[tuple[str, float, int]]:
    """(state, confidence, id) per position at trace record `index` (0-based); for a re-masked
    position the id is the token it withdrew (shown struck through)."""
    rec = run.trace[index]
    prev = run.trace[index - 1]["tokens"] if index > 0 else None
    mask = run.model.family.mask_id
    changed = set(rec["changed"])
    remasked = set(rec.get("remasked", ()))
    n_prompt = len(run.prompt_ids)
    out = []
    for i, (tok, conf) in enumerate(zip(rec["tokens"], rec["confidence"])):
        if i < n_prompt:
            state = "prompt"
        elif i in remasked:
            state = "remasked"
            tok = prev[i] if prev is not None else tok
        elif tok == mask:
            state = "masked"
        elif i in changed:
            was_masked = prev[i] == mask if prev is not None else run.masked_start
            state = "revealed" if was_masked else "changed"
        else:
            state = "stable"
        out.append((state, conf, tok))
    return out


def confidence_opacity(p: float) -> float:
    """Log-scale opacity: p = 1 -> 1, 0.1 -> 0.78, 0.01 -> 0.57, <= 0.001 -> 0.35 (small models are unsure)."""
    level = 1 + math.log10(max(p, 1e-9)) / 3
    return 0.35 + 0.65 * max(0.0, min(1.0, level))


def _stats_line(st: dict, replay: bool = False) -> str:
    total = st["total_steps"]
    counter = f'step <b class="dlm-step" data-step="{st["step"]}">{st["step"]}</b>' + (f" / {total}" if total else "")
    parts = [counter, f"NFE {st['nfe']}", f"{st['seconds']:.2f} s"]
    if st["tokens_per_s"] is not None:
        parts.append(f"{st['tokens_per_s']:,.0f} tok/s")
    parts.append("✓ done" if st["done"] else "replay" if replay else "sampling…")
    return " · ".join(parts)


def short_name(key: str) -> str:
    """An embedded name as is; a path by its last two parts (full path in the panel's subtitle)."""
    parts = key.rstrip("/").split("/")
    return key if len(parts) <= 2 else "…/" + "/".join(parts[-2:])


def render_panel(run, upto: int | None = None, label: str = "") -> str:
    """One model's panel at step `upto` (1-based; None = latest)."""
    key = _esc(run.key)
    colour = family_colour(run.model.family.name)     # the family's colour in every figure (toolkit/plotting.py)
    head = (f'<div class="dlm-head"><span class="dlm-swatch" style="background:{colour}" data-colour="{colour}"></span>'
            f'{_esc(short_name(run.key))} <span class="dlm-desc">{_esc(label)}</span></div>')
    if run.error:
        return (f'<div class="dlm-panel dlm-error" data-key="{key}" data-done="error">{head}'
                f'<div class="dlm-msg">{_esc(run.error)}</div></div>')
    if not run.trace:
        return f'<div class="dlm-panel" data-key="{key}" data-done="false">{head}<div class="dlm-stats">starting…</div></div>'
    index = min(upto or len(run.trace), len(run.trace)) - 1
    st = run.stats(index + 1)
    spans = []
    for state, conf, tok in token_states(run, index):
        text = "▒" if state == "masked" else _esc(run.token_string(tok))
        opacity = 1.0 if state in ("masked", "remasked", "prompt") else confidence_opacity(conf)
        tip = f"re-masked: withdrew {run.token_string(tok)!r}" if state == "remasked" else f"p={conf:.3f}"
        spans.append(f'<span class="tok {state}" style="opacity:{opacity:.2f}" title="{html.escape(tip)}">{text}</span>')
    final = ""
    if st["done"]:
        final = f'<div class="dlm-final" data-final="1">{html.escape(run.texts()[0])}</div>'
    return (f'<div class="dlm-panel" data-key="{key}" data-done="{str(st["done"]).lower()}">{head}'
            f'<div class="dlm-stats">{_stats_line(st, run.done)}</div><div class="dlm-text">{"".join(spans)}</div>{final}</div>')


def render_runs(runs, upto: int | None = None, labels: dict | None = None) -> str:
    labels = labels or {}
    panels = "".join(render_panel(r, upto, labels.get(r.key, "")) for r in runs)
    return f'{LEGEND}<div class="dlm-grid">{panels}</div>'


def message_html(msg: str) -> str:
    return f'<div class="dlm-msg">{_esc(msg)}</div>'


def step_curves(run) -> tuple[list[int], list[int], list[float]]:
    """Per step: tokens changed, and the mean confidence of the visible generated tokens."""
    mask, n_prompt = run.model.family.mask_id, len(run.prompt_ids)
    steps, changed, conf = [], [], []
    for rec in run.trace:
        vis = [c for i, (t, c) in enumerate(zip(rec["tokens"], rec["confidence"])) if i >= n_prompt and t != mask]
        steps.append(rec["step"])
        changed.append(len(rec["changed"]))
        conf.append(sum(vis) / len(vis) if vis else math.nan)
    return steps, changed, conf


def run_plot(runs):
    """Small multiples: per model, bars of tokens changed per step and a line of mean confidence."""
    from matplotlib.figure import Figure   # deferred: matplotlib is slow to import
    shown = [r for r in runs if r.trace]
    if not shown:
        return None
    fig = Figure(figsize=(3.2 * len(shown), 2.6), layout="constrained")
    axes = fig.subplots(1, len(shown), squeeze=False)[0]
    for ax, run in zip(axes, shown):
        steps, changed, conf = step_curves(run)
        ax.bar(steps, changed, color=family_colour(run.model.family.name), width=1.0, label="tokens changed")
        ax.set_title(short_name(run.key), fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("tokens changed", fontsize=8)
        ax.tick_params(labelsize=7)
        twin = ax.twinx()
        twin.plot(steps, conf, color="#333333", lw=1.2)
        twin.set_ylim(0, 1.02)
        twin.set_ylabel("mean confidence (line)", fontsize=8)
        twin.tick_params(labelsize=7)
    return fig
