"""The one option declaration (toolkit/options.py): the KEY=VALUE parser, typed values, choices,
and the CLI help and GUI controls generated from a declaration."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from toolkit.errors import UserError
from toolkit.families import REGISTRY
from toolkit.families.base import Family
from toolkit.options import build, check, coerce, describe, option, parse_overrides, parse_pairs, parse_spec


@dataclass
class Knobs:
    mode: str = option("fast", "how to run", ("fast", "exact"))
    depth: int = option(3, "levels")
    scale: float = option(0.5)
    verbose: bool = option(False, "say more")
    target: float | None = option(None, "blank: the model's own")

    def validate(self) -> None:
        if self.depth < 0:
            raise UserError(f"depth must be >= 0 (got {self.depth})")


# -- the one KEY=VALUE parser --------------------------------------------------------------------
def test_pairs_from_argv_items_and_from_text_agree():
    want = {"k": "4", "threshold": "0.9"}
    assert parse_pairs(["k=4", "threshold=0.9"]) == want
    assert parse_pairs("k=4, threshold=0.9") == want == parse_pairs("k=4 threshold=0.9") == parse_pairs("k=4,threshold=0.9")
    assert parse_pairs({"k": 4}) == {"k": 4} and parse_pairs("") == {} and parse_pairs(None) == {}
    assert parse_pairs(["path=a=b"]) == {"path": "a=b"}           # only the first '=' splits
    assert parse_overrides(["a=1", "a=2"]) == [("a", "1"), ("a", "2")]   # order and repeats kept


def test_quotes_keep_commas_and_spaces_in_a_value():
    assert parse_pairs("prompt='a, b' k=2") == {"prompt": "a, b", "k": "2"}
    assert parse_pairs('x="1 2",y=3') == {"x": "1 2", "y": "3"}
    assert parse_spec("block:order=random, block_size=8") == ("block", {"order": "random", "block_size": "8"})
    assert parse_spec(" ancestral ") == ("ancestral", {})


@pytest.mark.parametrize("bad", [["novalue"], ["=3"], [" =3"], "k=1 oops", "k='unclosed"])
def test_a_bad_pair_is_one_line_naming_the_flag(bad):
    with pytest.raises(UserError) as e:
        parse_pairs(bad, "--option")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("--option")


def test_a_bad_spec_names_the_syntax():
    with pytest.raises(UserError, match=r"NAME or NAME:KEY=VALUE.*'confidence:k'"):
        parse_spec("confidence:k")


# -- typed values and choices from the declaration ----------------------------------------------
def test_describe_reads_type_default_choices_and_help():
    specs = {s.name: s for s in describe(Knobs)}
    assert [s.name for s in describe(Knobs())] == ["mode", "depth", "scale", "verbose", "target"]
    assert specs["mode"].choices == ("fast", "exact") and specs["mode"].help_text() == "how to run [fast | exact]"
    assert (specs["depth"].type, specs["depth"].default) == (int, 3)
    assert specs["target"].type is float and specs["target"].optional and specs["target"].default is None
    assert not specs["scale"].optional and specs["scale"].help_text() == ""


def test_coerce_parses_strings_by_declared_type():
    assert coerce("yes", bool, "v") is True and coerce("off", bool, "v") is False
    assert coerce("1e3", int, "n") == 1000 and isinstance(coerce("1e3", int, "n"), int)
    assert coerce(2, float, "x") == 2.0 and isinstance(coerce(2, float, "x"), float)
    assert coerce("0.25", float | None, "t") == 0.25
    for raw, typ in (("maybe", bool), ("2.5", int), ("inf", int), ("x", float)):
        with pytest.raises(UserError, match="expected"):
            coerce(raw, typ, "key")
    with pytest.raises(UserError, match="expected int, got 2.5"):
        coerce(2.5, int, "n")


def test_choices_error_comes_from_the_declaration():
    with pytest.raises(UserError) as e:
        check(Knobs(mode="slow"))
    assert str(e.value) == "mode must be one of fast, exact (got 'slow')"
    with pytest.raises(UserError, match="^demo option mode must be one of fast, exact"):
        check(Knobs(mode="slow"), where="demo option ")
    with pytest.raises(UserError, match="depth must be >= 0"):   # then the class's own validate()
        check(Knobs(depth=-1))
    check(Knobs(target=None))   # an Optional option may stay unset


def test_build_types_values_and_names_the_owner_of_an_unknown_key():
    k = build(Knobs, {"depth": "7", "verbose": "true", "target": "0.5"}, "thing x")
    assert (k.depth, k.verbose, k.target, k.mode) == (7, True, 0.5, "fast")
    assert build(Knobs, {}, "thing x", defaults={"depth": 9}).depth == 9
    with pytest.raises(UserError, match=r"^thing x has no option 'nope' \(known: depth, mode, scale, target, verbose\)$"):
        build(Knobs, {"nope": 1}, "thing x")
    with pytest.raises(UserError, match="mode must be one of"):
        build(Knobs, {"mode": "slow"}, "thing x")


def test_run_config_choices_come_from_its_declarations():
    from toolkit.config import ModelConfig
    from toolkit.model.attention import BACKENDS
    from toolkit.resolve import resolve
    assert {s.name: s.choices for s in describe(ModelConfig)}["attention"] == ("auto", *BACKENDS)
    with pytest.raises(UserError, match=r"^attention must be one of auto, sdpa, xformers, math \(got 'flash'\)$"):
        resolve(["attention=flash"])


# -- help and controls are generated from the declarations --------------------------------------
@dataclass
class ToyTrain:
    wobble: int = option(11, "how much the toy wobbles")


@dataclass
class ToySampling:
    flavour: str = option("plain", "which toy flavour", ("plain", "spicy"))
    rounds: int = option(2, "toy rounds")
    loud: bool = option(True, "toy loudness")
    level: float | None = option(None, "toy level (blank: the checkpoint's)")


@pytest.fixture
def toy_family(monkeypatch):
    class Toy(Family):
        name = "toyfam"
        Options = ToyTrain
        SamplingOptions = ToySampling
    monkeypatch.setitem(REGISTRY, "toyfam", Toy)
    return Toy


def test_cli_help_lists_a_newly_declared_option(toy_family):
    from toolkit.cli.usage import sampling_options_text, train_usage
    text = train_usage("usage")
    assert "wobble=11 (how much the toy wobbles)" in text
    assert "flavour=plain, rounds=2, loud=True, level=None" in text
    sampling = sampling_options_text()
    assert "toyfam: flavour (default plain): which toy flavour [plain | spicy]" in sampling
    assert "toyfam: level (default None): toy level (blank: the checkpoint's)" in sampling


def test_run_config_help_is_its_declarations():
    from toolkit.cli.usage import train_usage
    from toolkit.config import RunConfig
    text = train_usage("usage")
    cfg = RunConfig()
    for section in ("model", "data", "optim", "train"):
        for s in describe(getattr(cfg, section)):
            assert f"  {s.name}={s.default}" in text and s.help_text() in text


def test_gui_controls_come_from_a_new_declaration(toy_family):
    gr = pytest.importorskip("gradio")
    from gui.strategies import family_option_controls
    with gr.Blocks():
        controls = {(f, o): c for f, o, c in family_option_controls() if f == "toyfam"}
    assert set(controls) == {("toyfam", n) for n in ("flavour", "rounds", "loud", "level")}
    flavour = controls["toyfam", "flavour"]
    assert isinstance(flavour, gr.Dropdown) and flavour.value == "plain"
    assert [c[0] for c in flavour.choices] == ["plain", "spicy"] and flavour.info == "which toy flavour"
    assert isinstance(controls["toyfam", "rounds"], gr.Number) and controls["toyfam", "rounds"].value == 2
    assert isinstance(controls["toyfam", "loud"], gr.Checkbox) and controls["toyfam", "loud"].value is True
    level = controls["toyfam", "level"]
    assert isinstance(level, gr.Textbox) and level.value == "" and level.placeholder == "checkpoint default"


def test_strategy_options_hint_and_listing_show_a_new_strategy_option():
    from toolkit.samplers import SAMPLERS, Sampler, register
    from toolkit.samplers.requests import listing

    @dataclass
    class ToyStrategyOptions:
        swirl: int = option(5, "toy swirls", (5, 6))

    class ToyStrategy(Sampler):
        name = "toy_swirl"
        summary = "a toy"
        Options = ToyStrategyOptions

    register(ToyStrategy)
    try:
        assert "    swirl=5  toy swirls [5 | 6]" in listing()
        gr = pytest.importorskip("gradio")   # noqa: F841  (gui.strategies builds Gradio components)
        from gui.strategies import strategy_options_hint
        placeholder, info = strategy_options_hint(["ancestral", "toy_swirl"])
        assert placeholder == "e.g. swirl=5" and "toy_swirl: swirl=5" in info
    finally:
        SAMPLERS.pop("toy_swirl")
