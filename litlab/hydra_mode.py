"""One Hydra composition per run instead of two (start-up, issue 14).

Before a run, Hydra 1.3 composes the whole config once only to read ``hydra.mode``
(``Hydra.get_mode``: a config may turn a plain ``python train.py`` into a multirun, as
``hparams_search=vae`` and the report's multirun experiments do), then composes it again to run:
about 0.3 s of CPU, a tenth of what litlab adds to the bare ``import torch, lightning``.

:func:`skip_mode_probe` skips that first composition when its answer is known without it: no config
under ``conf/`` that sets ``hydra.mode`` (a ``mode: RUN|MULTIRUN`` line) can be part of this run.
Such configs live in a few groups (``experiment/``, ``hparams_search/``); they are reachable only if
the command line names one of those groups (``experiment=...``) or ``hydra.mode``, or if a config's
defaults list selects one of them (not ``null``). Otherwise Hydra's ``get_mode`` would return None
(no mode set), which is what the patched one returns at once. Anything unusual (another primary
config, ``hydra/...`` overrides, another Hydra version) leaves Hydra as it is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import hydra

SETS_MODE = re.compile(r"^\s+mode:\s*(RUN|MULTIRUN)\b", re.M)
HYDRA_FLAGS = ("-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir")


def config_texts(conf_dir: Path) -> dict[str, str]:
    """Every config under ``conf_dir`` by its group (``""``: the primary configs), its text."""
    texts = {}
    for path in sorted(conf_dir.rglob("*.yaml")):
        group = path.parent.relative_to(conf_dir).as_posix()
        texts[f"{'' if group == '.' else group}:{path.stem}"] = path.read_text()
    return texts


def mode_groups(texts: dict[str, str]) -> set[str]:
    """The groups holding a config that sets ``hydra.mode`` (``""``: a primary config does)."""
    return {name.split(":")[0] for name, text in texts.items() if SETS_MODE.search(text)}


def selected_in_defaults(texts: dict[str, str], groups: set[str]) -> bool:
    """Whether any config's defaults list selects an option (not ``null``) of one of ``groups``."""
    if not groups:
        return False
    names = "|".join(re.escape(group) for group in sorted(groups))
    selects = re.compile(rf"^\s*-\s*(?:override\s+)?/?(?:{names})\s*:\s*(?!null\b)\S", re.M)
    return any(selects.search(text) for text in texts.values())


def mode_probe_needed(args: Sequence[str], conf_dir: Path) -> bool:
    """Whether Hydra must compose the config to learn ``hydra.mode`` for ``python train.py args``."""
    texts = config_texts(conf_dir)
    groups = mode_groups(texts)
    if "" in groups or selected_in_defaults(texts, groups):
        return True
    for arg in args:
        if arg in HYDRA_FLAGS or arg.startswith(tuple(f"{flag}=" for flag in HYDRA_FLAGS)):
            return True
        if arg.startswith("-"):
            continue
        key = arg.split("=", 1)[0].lstrip("+~").strip()
        if key.startswith(("hydra.mode", "hydra/")) or key.split("/")[0] in groups:
            return True
    return False


ORIGINAL_GET_MODE: dict[str, object] = {}  # Hydra's own get_mode, before any patch of ours


def skip_mode_probe(args: Sequence[str], conf_dir: Path) -> bool:
    """Make Hydra's ``get_mode`` return None without composing, when :func:`mode_probe_needed`
    says no config can set the mode; returns whether it did."""
    try:
        from hydra._internal.hydra import Hydra
    except ImportError:  # pragma: no cover  (another Hydra: leave it alone)
        return False
    if not hydra.__version__.startswith("1.3.") or not hasattr(Hydra, "get_mode"):
        return False
    original = ORIGINAL_GET_MODE.setdefault("get_mode", Hydra.get_mode)
    if mode_probe_needed(args, conf_dir):
        Hydra.get_mode = original  # a second run in this process may need the probe
        return False

    def get_mode(self: Hydra, config_name: str | None, overrides: list[str]) -> None:
        return None  # what Hydra's composition would find: no config sets hydra.mode

    Hydra.get_mode = get_mode
    return True
