"""The documented contract for a new decoding strategy (docs/architecture.md, "a new decoding
strategy in one file"): a toy strategy registered from a test runs on MDLM and Eso-LM through the
CLI and the GUI's denoise API, and the registry offers it exactly to the families with the
capability it declares."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace

import pytest

import toolkit
from toolkit.errors import UserError
from toolkit.families import REGISTRY
from toolkit.families.base import MaskedFamily
from toolkit.options import option
from toolkit.samplers import SAMPLERS, Sampler, register, supported
from toolkit.sample_request import SampleRequest


# --- the worked example of docs/architecture.md, verbatim in spirit --------------------------
@dataclass
class CoolOptions:
    scale: float = option(0.5, "multiply the temperature by this")

    def validate(self) -> None:
        if self.scale < 0:
            raise UserError(f"scale must be >= 0 (got {self.scale})")


class Cool(Sampler):
    name = "toy_cool"
    summary = "the family's reverse process at a scaled temperature"
    Options = CoolOptions
    requires = MaskedFamily          # the capability it needs: offered to masked families only
    reads_family_options = True      # it runs family.sample, which reads the family's own options

    def run(self, family, net, request, o, device):
        yield from family.sample(net, replace(request, temperature=request.temperature * o.scale), device)
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def toy():
    register(Cool)
    yield "toy_cool"
    SAMPLERS.pop("toy_cool")


def reference_tokens(name: str, **request) -> list:
    """The same request run through the family's own sampler at the scaled temperature."""
    model = toolkit.load(name)
    _, last = model.generate(SampleRequest(**request))
    return last.tokens.tolist()


def test_registry_offers_it_from_the_declared_capability(toy):
    for name, fam in REGISTRY.items():
        assert (toy in supported(fam)) == issubclass(fam, MaskedFamily), name
    assert toy in supported(toolkit.load("esolm").family) and toy not in supported(toolkit.load("duo").family)


@pytest.mark.parametrize("family", ["mdlm", "esolm"])
def test_toy_strategy_through_the_cli(toy, family, capsys):
    from toolkit.cli.sample import main
    assert main([family, "--steps", "6", "--length", "12", "--num-samples", "2", "--seed", "3",
                 "--temperature", "0.8", "--sampler", toy, "--option", "scale=0.25", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sampler"] == toy
    want = reference_tokens(family, num_samples=2, length=12, steps=6, seed=3, temperature=0.2)
    assert out["tokens"] == want
    # the scale matters: at the unscaled temperature the samples differ
    assert out["tokens"] != reference_tokens(family, num_samples=2, length=12, steps=6, seed=3, temperature=0.8)


@pytest.mark.parametrize("argv, message", [
    (["mdlm", "--sampler", "toy_cool", "--option", "scale=-1"], "error: scale must be >= 0 (got -1.0)"),
    (["duo", "--sampler", "toy_cool"], "error: family duo does not support sampler 'toy_cool'")])
def test_toy_strategy_bad_input_is_one_line(toy, argv, message, capsys):
    from toolkit.cli.sample import main
    with pytest.raises(SystemExit) as e:
        main(argv + ["--steps", "2", "--length", "8"])
    assert e.value.code == 2 and capsys.readouterr().err.startswith(message)


def test_toy_strategy_through_the_gui_denoise_api(toy):
    pytest.importorskip("gradio")
    from gui.denoise_tab import denoise_endpoint
    from gui.models import ModelRegistry
    denoise = denoise_endpoint(ModelRegistry(["mdlm", "esolm"], evaluator="ar"))
    out = denoise("", ["mdlm", "esolm"], length=12, steps=6, seed=3, temperature=0.8,
                  strategies={"mdlm": f"{toy}:scale=0.25", "esolm": f"{toy}:scale=0.25"})
    assert out["errors"] == {}
    for family in ("mdlm", "esolm"):
        model = toolkit.load(family)
        cool = SampleRequest(length=12, steps=6, seed=3, temperature=0.8, sampler=toy, sampler_options={"scale": 0.25})
        ref = SampleRequest(length=12, steps=6, seed=3, temperature=0.2)
        assert model.generate(cool)[0] == model.generate(ref)[0]
        assert out["texts"][family] == model.generate(ref)[0][0]
