"""The Gradio app: `build_app` composes the tabs (gui/denoise_tab.py, gui/explorer_tab.py); also
launching it, in the foreground or (tests, benchmarks) in the background."""
from __future__ import annotations

import socket

import gradio as gr
import torch

from toolkit.errors import UserError
from toolkit.families import REGISTRY

from gui import render
from gui.denoise_tab import denoise_endpoint, denoise_tab
from gui.explorer_tab import explorer_tab
from gui.live import MAX_LENGTH
from gui.models import ModelRegistry
from gui.policy import CORES, AccessPolicy


def heading() -> str:
    """The app's title line, naming the registered families (in registry order)."""
    return ("## Diffusion language models, live\n" + ", ".join(f"`{name}`" for name in REGISTRY)
            + " sampling side by side, from the same prompt and seed, on your CPU.")


def build_app(registry: ModelRegistry, concurrency: int = 2, policy: AccessPolicy | None = None,
              queue_size: int = 64, threads: int = 0) -> gr.Blocks:
    """Compose the tabs; the only wiring here is what crosses them (a loaded checkpoint joins both).
    `policy` says what a shared app refuses (gui/policy.py); more than `queue_size` waiting requests
    are refused with Gradio's "queue is full" error, never dropped. The `threads` (0: torch's
    default) are shared by the requests running at once (gui.policy.CoreShare)."""
    policy = policy or AccessPolicy()
    CORES.total = threads or torch.get_num_threads()
    labels = {k: registry.describe(k) for k in registry.keys}

    def choices():
        return [(render.short_name(k), k) for k in registry.keys]

    context = max([registry.get(k).max_length for k in registry.keys] or [128])
    length_max = min(MAX_LENGTH, context)
    with gr.Blocks(title="Diffusion LMs, live") as demo:
        gr.Markdown(heading())
        denoise = denoise_tab(registry, labels, choices(), length_max, policy)
        x_models = explorer_tab(registry, choices(), length_max, policy)

        def add_path(p, selected, x_selected):
            try:
                key = policy.add_model(registry, p)
            except UserError as e:
                gr.Warning(str(e))
                return gr.update(), gr.update(), f"⚠️ {e}"
            labels[key] = registry.describe(key)
            return (gr.update(choices=choices(), value=list(dict.fromkeys([*(selected or []), key]))),
                    gr.update(choices=choices(), value=list(x_selected or [])), f"Loaded {key} ({labels[key]})")

        denoise.add.click(add_path, [denoise.path, denoise.models, x_models], [denoise.models, x_models, denoise.status],
                          api_visibility="private")
        endpoint = gr.api(denoise_endpoint(registry, policy), api_name="denoise")
        demo.fns[endpoint["id"]].outputs[0].label = "result"     # gr.api would call it "1st" in the API page

    demo.queue(default_concurrency_limit=concurrency, max_size=queue_size)
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, share: bool = False, **kwargs):
    return demo.launch(server_name=host, server_port=port, share=share, css=render.CSS, **kwargs)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def serve_in_background(registry: ModelRegistry, concurrency: int = 2, port: int | None = None,
                        policy: AccessPolicy | None = None, queue_size: int = 64):
    """Start the app in this process on a free localhost port (tests, benchmarks): (demo, url)."""
    demo = build_app(registry, concurrency, policy, queue_size)
    _, url, _ = launch(demo, port=port or free_port(), prevent_thread_lock=True, quiet=True)
    return demo, url
