"""The sampler interface and registry (see toolkit/samplers/__init__.py for the overview)."""
from __future__ import annotations

from typing import ClassVar, Iterator

from toolkit.errors import UserError
from toolkit.families.base import Family, MaskedFamily  # noqa: F401  (the capabilities a strategy requires)
from toolkit.options import NoOptions, build, coerce, describe
from toolkit.sample_request import SampleRequest, Step

DEFAULT = "ancestral"
SAMPLERS: dict[str, "Sampler"] = {}


class Sampler:
    """Base class: `name`, a one-line `summary`, an `Options` dataclass (fields declared with
    toolkit.options.option), the capability it needs and `run`.

    `requires` is the family base class whose methods `run` calls (Family: only `sample`;
    MaskedFamily: mask_id, subs_logits, reveal_probability); `attentions` the `decode_attention`
    values `run` handles. The registry derives the strategies a family supports from these two.

    The options a strategy reads are its `Options` fields, plus the family's own sampling options
    (`SamplingOptions`) when `reads_family_options` (a strategy that runs `family.sample`); a request
    giving an option the strategy does not read is refused (`resolve_sampler`)."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    requires: ClassVar[type] = Family
    attentions: ClassVar[tuple[str, ...]] = ("bidirectional", "causal_order")
    reads_family_options: ClassVar[bool] = False

    def supports(self, family) -> bool:
        """Whether this strategy runs on `family` (a family instance or class)."""
        cls = family if isinstance(family, type) else type(family)
        return issubclass(cls, self.requires) and cls.decode_attention in self.attentions

    def run(self, family, net, request: SampleRequest, options, device) -> Iterator[Step]:
        raise NotImplementedError

    def check(self, family, request: SampleRequest, options) -> None:
        """Raise UserError for options this family cannot honour (called before sampling starts)."""

    def option_names(self) -> set[str]:
        return {spec.name for spec in describe(self.Options)}


def register(cls: type[Sampler]) -> type[Sampler]:
    SAMPLERS[cls.name] = cls()
    return cls


def names() -> list[str]:
    return sorted(SAMPLERS, key=lambda n: (n != DEFAULT, n))


def supported(family) -> tuple[str, ...]:
    """The strategies `family` (instance or class) supports, from their declared capability; default first."""
    return tuple(n for n in names() if SAMPLERS[n].supports(family))


def get_sampler(name: str, family) -> Sampler:
    """The sampler `name` if `family` supports it, else a one-line UserError."""
    if name not in SAMPLERS:
        raise UserError(f"unknown sampler '{name}' (known: {', '.join(names())})")
    if name not in supported(family):
        raise UserError(f"family {family.name} does not support sampler '{name}'"
                        f" (supported: {', '.join(supported(family))})")
    return SAMPLERS[name]


def parse_options(sampler: Sampler, raw: dict):
    """Typed, checked Options from a dict of values (strings from a CLI/GUI parsed by declared type)."""
    return build(sampler.Options, raw, f"sampler {sampler.name}")


def resolve_sampler(family, request: SampleRequest):
    """(sampler, typed options) for a request; raises UserError for a bad pair or option."""
    sampler = get_sampler(request.sampler or DEFAULT, family)
    check_family_options_read(sampler, family, request.options)
    options = parse_options(sampler, request.sampler_options)
    sampler.check(family, request, options)
    return sampler, options


def family_option_readers(family) -> list[str]:
    """The strategies `family` supports that read its own sampling options."""
    return [n for n in supported(family) if SAMPLERS[n].reads_family_options]


def check_family_options_read(sampler: Sampler, family, options: dict) -> None:
    """A one-line UserError when a family sampling option is given to a strategy that does not read it."""
    given = sorted(k for k, v in (options or {}).items() if v is not None)
    if given and not sampler.reads_family_options:
        raise UserError(f"sampler {sampler.name} does not read family {family.name}'s sampling option"
                        f" '{given[0]}' (read by: {', '.join(family_option_readers(family)) or 'none'})")


def sample(family, net, request: SampleRequest, device="cpu") -> Iterator[Step]:
    sampler, options = resolve_sampler(family, request)
    yield from sampler.run(family, net, request, options, device)


def split_options(family, sampler_name: str, raw: dict) -> tuple[dict, dict]:
    """Route KEY=VALUE options (CLI --option, GUI) to the family or to the sampler by name, each value
    in its declared type ('0.1' -> 0.1), so a request records what it runs with, typed."""
    sampler = get_sampler(sampler_name or DEFAULT, family)
    fam_keys = set(family.sampling_defaults())
    fam_types = {spec.name: spec.type for spec in describe(family.SamplingOptions)}
    smp_types = {spec.name: spec.type for spec in describe(sampler.Options)}
    smp_keys = sampler.option_names()
    fam, smp = {}, {}
    for k, v in raw.items():
        if k in fam_keys:
            fam[k] = coerce(v, fam_types[k], k) if k in fam_types else v
        elif k in smp_keys:
            smp[k] = coerce(v, smp_types[k], k)
        else:
            try:   # a name the family still accepts (e.g. an older option's alias)
                family.check_sampling_options({k: v})
                fam[k] = v
                continue
            except UserError:
                pass
            raise UserError(f"family {family.name} has no sampling option '{k}', nor has sampler {sampler.name}"
                            f" (family: {', '.join(sorted(fam_keys)) or 'none'};"
                            f" sampler: {', '.join(sorted(smp_keys)) or 'none'})")
    return fam, smp
