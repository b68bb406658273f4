"""litlab.hydra_mode: Hydra's mode probe (a second composition of the config) is skipped only
where its answer is known, and then the answer is Hydra's own."""

from __future__ import annotations

import pytest
from hydra import initialize_config_dir
from hydra._internal.hydra import Hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode

from litlab.builders import CONF_DIR
from litlab.hydra_mode import config_texts, mode_groups, mode_probe_needed, skip_mode_probe

SKIPPABLE = [[], ["model=vae_cnn"], ["model=transformer_lm", "trainer.max_epochs=2"], ["-m", "seed=1,2"],
             ["hydra.run.dir=/tmp/x", "data.batch_size=64"]]  # fmt: skip
NEEDED = [["experiment=seq2seq_eos"], ["hparams_search=vae"], ["+experiment=vae_mlp_seed"],
          ["hydra.mode=MULTIRUN"], ["hydra/launcher=slurm"], ["--config-name", "train"]]  # fmt: skip


def hydra_mode(overrides: list[str]) -> RunMode | None:
    """What Hydra's own get_mode finds (it composes the config)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return GlobalHydra.instance().hydra.get_mode(config_name="train", overrides=overrides)


def test_the_groups_that_set_the_mode_are_found() -> None:
    assert {"experiment", "hparams_search"} <= mode_groups(config_texts(CONF_DIR))


@pytest.mark.parametrize("args", SKIPPABLE, ids=str)
def test_skipped_only_where_hydra_finds_no_mode(args: list[str]) -> None:
    assert not mode_probe_needed(args, CONF_DIR)
    assert hydra_mode([a for a in args if not a.startswith("-")]) is None


@pytest.mark.parametrize("args", NEEDED, ids=str)
def test_kept_where_a_config_or_the_command_line_may_set_it(args: list[str]) -> None:
    assert mode_probe_needed(args, CONF_DIR)


def test_a_config_that_sets_the_mode_is_still_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Hydra, "get_mode", Hydra.get_mode)  # restored after the test
    assert skip_mode_probe(["model=vae_mlp"], CONF_DIR)  # an earlier run in this process skipped
    assert not skip_mode_probe(["hparams_search=vae"], CONF_DIR)  # Hydra's own get_mode is back
    assert hydra_mode(["hparams_search=vae"]) == RunMode.MULTIRUN
    assert hydra_mode(["hparams_search=vae"]) == RunMode.MULTIRUN
    assert skip_mode_probe(["model=vae_cnn"], CONF_DIR)
    assert hydra_mode(["model=vae_cnn"]) is None
