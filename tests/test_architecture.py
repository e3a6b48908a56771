"""The import rules of docs/architecture.md, checked on the source (every import statement, at any
depth: one inside a function counts as much as one at the top)."""
from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import toolkit.cli
from toolkit.cli import COMMANDS
from toolkit.families import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
TOOLKIT = ROOT / "toolkit"


def imported_modules(path: Path, package: str | None = None) -> list[tuple[int, str]]:
    """(line, module) for every import in the file, resolving relative imports against its package."""
    if package is None:
        package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}".rstrip(".")
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]   # `from toolkit import families`
    return out


def offenders(files, banned: tuple[str, ...]) -> list[str]:
    return [f"{f.relative_to(ROOT)}:{line} imports {mod}" for f in files for line, mod in imported_modules(f)
            if any(mod == b or mod.startswith(b + ".") for b in banned)]


def test_the_checker_sees_nested_relative_and_from_imports(tmp_path):
    f = tmp_path / "probe.py"
    f.write_text("def f():\n    import gui.app\n"
                 "class C:\n    def m(self):\n        from training import sweep\n"
                 "from . import families\nfrom toolkit import model\nfrom ..cli import common\n")
    found = {m for _, m in imported_modules(f, package="toolkit.checkpoints")}
    assert {"gui.app", "training.sweep", "toolkit.checkpoints.families", "toolkit.model", "toolkit.cli.common"} <= found


def test_toolkit_never_imports_gui_or_training():
    assert offenders(sorted(TOOLKIT.rglob("*.py")), ("gui", "training")) == []


def test_config_is_a_leaf():
    """config.py may not reach the families or the model, directly or inside a function."""
    assert offenders([TOOLKIT / "config.py"], ("toolkit.families", "toolkit.model")) == []


@pytest.mark.parametrize("leaf", ["errors.py", "options.py", "presets.py"])
def test_bottom_modules_import_nothing_above_them(leaf):
    mods = {m for _, m in imported_modules(TOOLKIT / leaf) if m.startswith("toolkit")}
    assert all(m == "toolkit.errors" or m.startswith("toolkit.errors.") for m in mods), mods


def test_lower_layers_do_not_import_the_registry_or_upper_layers():
    lower = [TOOLKIT / n for n in ("config.py", "schedule.py", "sample_request.py")]
    lower += sorted((TOOLKIT / "model").rglob("*.py")) + sorted((TOOLKIT / "data").rglob("*.py"))
    upper = ("toolkit.families", "toolkit.resolve", "toolkit.lm", "toolkit.checkpoints", "toolkit.trainer",
             "toolkit.evaluation", "toolkit.scaling", "toolkit.cli")
    assert offenders(lower, upper) == []
    families = sorted((TOOLKIT / "families").rglob("*.py"))
    assert offenders(families, upper[1:]) == []


def test_decoders_sit_below_families_and_samplers():
    """Families and strategies both run on the decoders (toolkit/decoding/), which import neither;
    families never import a strategy."""
    assert offenders(sorted((TOOLKIT / "decoding").rglob("*.py")), ("toolkit.families", "toolkit.samplers")) == []
    assert offenders(sorted((TOOLKIT / "families").rglob("*.py")), ("toolkit.samplers",)) == []


def test_function_level_imports_say_why():
    """A function-level import only defers a heavy or optional dependency, and says so."""
    bad = []
    for f in sorted(TOOLKIT.rglob("*.py")) + sorted((ROOT / "gui").rglob("*.py")) + sorted((ROOT / "training").rglob("*.py")):
        lines = f.read_text().splitlines()
        for fn in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        near = lines[max(0, node.lineno - 4): node.lineno]
                        if not any("deferred" in line for line in near):
                            bad.append(f"{f.relative_to(ROOT)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert bad == []


def test_command_table_matches_the_cli_folder():
    modules = {m.name for m in pkgutil.iter_modules(toolkit.cli.__path__)} - {"common", "usage"}
    assert {path.rsplit(".", 1)[1] for path, _ in COMMANDS.values()} == modules
    for name, (path, about) in COMMANDS.items():
        assert callable(importlib.import_module(path).main) and about


def family_literals(files) -> list[str]:
    """String constants that are a registered family's name, ignoring case and surrounding space
    (`"mdlm"`, `"AR"`): the registry and the family objects answer what a name would decide."""
    names = set(REGISTRY)
    return [f"{f.relative_to(ROOT) if f.is_relative_to(ROOT) else f.name}:{node.lineno}: {node.value!r}" for f in files
            for node in ast.walk(ast.parse(f.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.strip().lower() in names]


def test_the_family_literal_checker_sees_one(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text('if fam.name == "esolm" or label == " AR":\n    pass\nx = f"{fam.name}:mdlm"\n'
                     'y = {"duo": 1}\nz = "ardent"\n')
    assert sorted(hit.split(": ", 1)[1] for hit in family_literals([probe])) == ["' AR'", "'duo'", "'esolm'"]


def test_no_family_name_outside_the_families():
    """The CLIs, the trainer, the training entry points and the GUI read the registry: no string literal
    names a family."""
    files = (sorted((TOOLKIT / "cli").rglob("*.py")) + sorted((TOOLKIT / "trainer").rglob("*.py"))
             + sorted((ROOT / "gui").rglob("*.py")) + sorted((ROOT / "training").glob("*.py"))
             + [TOOLKIT / "lm.py", TOOLKIT / "resolve.py"])
    assert family_literals(files) == []


def private_imports(path: Path, own: str | None = None) -> list[str]:
    """`from X import _name` / `import X._name` where X is another package than the file's own."""
    if own is None:
        own = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    bad = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and not node.level:
            pkg = node.module or ""
            names = [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            pkg, names = "", [a.name for a in node.names]
        else:
            continue
        for name in names:
            full = f"{pkg}.{name}".strip(".")
            if full.split(".")[0] not in PROJECT_PACKAGES:   # a third party's private module is its own business
                continue
            parts = full.split(".")
            private = [i for i, p in enumerate(parts) if p.startswith("_") and not p.startswith("__")]
            if private and ".".join(parts[:private[0]]).rsplit(".", 1)[0] != own and ".".join(parts[:private[0]]) != own:
                bad.append(f"{path.name}:{node.lineno} imports {full}")
    return bad


PROJECT_PACKAGES = ("toolkit", "gui", "training", "benchmarks", "tools", "studies")


def source_files() -> list[Path]:
    return [f for d in PROJECT_PACKAGES for f in sorted((ROOT / d).rglob("*.py"))]


def test_the_private_import_checker_sees_one(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from toolkit.families.esolm import _Hidden\nfrom gui.live import _mine\n"
                     "import toolkit.samplers._x\nfrom toolkit.samplers.common import _ok\nimport torch._inductor\n")
    assert private_imports(probe, own="toolkit.samplers") == ["probe.py:1 imports toolkit.families.esolm._Hidden",
                                                              "probe.py:2 imports gui.live._mine"]


def test_no_private_name_imported_across_packages():
    assert [b for f in source_files() for b in private_imports(f)] == []


def string_literals(files, names: set[str]) -> list[str]:
    """Constants in `names`, except record keys (`rec["confidence"]`, `d.get("confidence")`: a field, not a name)."""
    found = []
    for f in files:
        tree = ast.parse(f.read_text())
        keys = {id(n.slice) for n in ast.walk(tree) if isinstance(n, ast.Subscript)}
        keys |= {id(n.args[0]) for n in ast.walk(tree) if isinstance(n, ast.Call) and n.args
                 and isinstance(n.func, ast.Attribute) and n.func.attr == "get"}
        found += [f"{f.relative_to(ROOT)}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
                  and id(node) not in keys]
    return found


def test_no_strategy_name_in_the_trainer_or_the_clis():
    """The trainer and the CLIs read the strategy registry (toolkit.samplers): no literal names one."""
    from toolkit.samplers import SAMPLERS
    files = sorted((TOOLKIT / "cli").rglob("*.py")) + sorted((TOOLKIT / "trainer").rglob("*.py"))
    assert string_literals(files, set(SAMPLERS)) == []


def test_no_strategy_name_in_the_gui():
    """The GUI asks the registry for defaults and supported strategies (toolkit/samplers/requests.py)."""
    pytest.importorskip("gradio")
    from toolkit.samplers import SAMPLERS
    assert string_literals(sorted((ROOT / "gui").rglob("*.py")), set(SAMPLERS)) == []


def option_dataclasses() -> dict[str, type]:
    """Every dataclass of user-settable options: the run config's sections, each family's training
    and sampling options, each strategy's options, the sweep's keys."""
    from toolkit.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
    from toolkit.samplers import SAMPLERS
    from training.sweep import SweepKeys
    out = {c.__name__: c for c in (ModelConfig, DataConfig, OptimConfig, TrainConfig, SweepKeys)}
    for name, fam in REGISTRY.items():
        out[f"{name}.Options"], out[f"{name}.SamplingOptions"] = fam.Options, fam.SamplingOptions
    out.update({f"sampler {name}": s.Options for name, s in SAMPLERS.items()})
    return out


def test_every_option_is_declared_with_option():
    """One declaration per option (toolkit/options.py): help, choices and CLI/GUI text come from it,
    so a plain field (or a help text in a trailing comment) would be invisible to all of them."""
    import dataclasses
    plain = [f"{owner}.{f.name}" for owner, cls in option_dataclasses().items()
             for f in dataclasses.fields(cls) if "choices" not in f.metadata]
    assert plain == []


def test_the_choices_error_is_written_once():
    """'NAME must be one of ...' comes from toolkit/options.py (declared choices or require_choice)."""
    files = sorted(TOOLKIT.rglob("*.py")) + sorted((ROOT / "gui").rglob("*.py")) + sorted((ROOT / "training").rglob("*.py"))
    assert [str(f.relative_to(ROOT)) for f in files
            if "must be one of" in f.read_text() and f != TOOLKIT / "options.py"] == []


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = TOOLKIT) -> dict[str, set[str]]:
    """module -> the project modules it imports (at any depth), under `root`. Importing `a.b.c` also
    runs the packages `a.b` and `a` unless the importer sits inside them (its own package is already
    importing); `from a import b` names the module `a.b` when there is one."""
    files = {module_name(f): f for f in sorted(root.rglob("*.py"))}
    graph = {}
    for mod, f in files.items():
        own = mod if f.name == "__init__.py" else mod.rsplit(".", 1)[0]
        edges = set()
        for _, target in imported_modules(f, package=own):
            while target not in files and "." in target:   # `from a import name`: the module is a
                target = target.rsplit(".", 1)[0]
            if target not in files:
                continue
            parts = target.split(".")
            for i in range(len(parts), 1, -1):
                pkg = ".".join(parts[:i])
                if pkg != target and (own == pkg or own.startswith(pkg + ".")):
                    continue
                edges.add(pkg)
        edges.discard(mod)
        graph[mod] = edges
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm), sorted."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


# the one documented exception (docs/architecture.md, layer 4): resolve.init_base reads an init=
# checkpoint's config through checkpoints/rundir.py (a deferred import), and the checkpoints package
# reads saved configs with resolve.config_from_dict. That one import may close a circle; no other may.
ALLOWED_IMPORT = ("toolkit.resolve", "toolkit.checkpoints.rundir")


def test_the_circle_finder_sees_one_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "toolkit"
    (pkg / "families").mkdir(parents=True)
    (pkg / "samplers").mkdir()
    for d in (pkg, pkg / "families", pkg / "samplers"):
        (d / "__init__.py").write_text("")
    (pkg / "families" / "base.py").write_text("def f():\n    from toolkit.samplers.dec import D\n")
    (pkg / "samplers" / "dec.py").write_text("from toolkit.families.base import g\n")
    (pkg / "samplers" / "other.py").write_text("from toolkit.samplers import dec\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert import_circles(import_graph(pkg)) == [["toolkit.families.base", "toolkit.samplers.dec"]]
    finally:
        ROOT = saved


def test_no_import_circle_inside_the_toolkit():
    """Every import at any depth counts: a deferred import that closes a circle is still a circle."""
    graph = import_graph()
    importer, target = ALLOWED_IMPORT
    assert target in graph[importer]   # the exception is still there (else drop it from this test and the docs)
    graph[importer] -= {target, target.rsplit(".", 1)[0]}   # the module and the package it runs
    assert import_circles(graph) == []
