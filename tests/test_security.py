"""A checkpoint is data, never code: foreign ``_target_``s in its hyperparameters are refused
before anything is imported or called (issue 13.1), wherever they sit in the config tree."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from lightning_modules.seq2seq import Seq2Seq
from lightning_modules.vae import VAE
from litlab.cli.translate import main as translate_main
from litlab.errors import CheckpointError
from litlab.safety import check_targets, is_allowed

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def payloads(marker: Path) -> dict[str, dict]:
    """Callables that would write ``marker`` (or worse) if they were ever called."""
    return {
        "numpy.savetxt": {"_target_": "numpy.savetxt", "fname": str(marker), "X": [0],
                          "header": "import os; os.system('touch pwned')"},
        "builtins.open": {"_target_": "builtins.open", "file": str(marker), "mode": "w"},
        "shutil.copy": {"_target_": "shutil.copy", "src": __file__, "dst": str(marker)},
        "pathlib.Path.mkdir": {"_target_": "pathlib.Path.mkdir", "self": str(marker)},
        "litlab.files.write_csv": {"_target_": "litlab.files.write_csv", "path": str(marker),
                                   "header": ["a"], "rows": [["b"]]},
        "os.system": {"_target_": "os.system", "command": f"touch {marker}"},
        "partial": {"_target_": "builtins.open", "_partial_": True, "file": str(marker)},
    }  # fmt: skip


def placements(hparams: dict, payload: dict) -> dict[str, dict]:
    """The payload put at several depths and positions of a real VAE checkpoint's hparams."""
    out = {}
    h = copy.deepcopy(hparams)
    h["encoder"] = payload
    out["encoder"] = h
    h = copy.deepcopy(hparams)
    h["decoder"]["hidden_dims"] = [8, payload]
    out["decoder.hidden_dims[1]"] = h
    h = copy.deepcopy(hparams)
    h["encoder"]["_args_"] = [payload]
    out["encoder._args_[0]"] = h
    h = copy.deepcopy(hparams)
    h["optimizer"] = payload
    out["optimizer"] = h
    h = copy.deepcopy(hparams)
    h["scheduler"] = {"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": payload}
    out["scheduler.step_size"] = h
    h = copy.deepcopy(hparams)
    h["extra"] = {"deep": {"deeper": [payload]}}
    out["extra.deep.deeper[0]"] = h
    return out


def cases() -> list[tuple[str, str]]:
    names = payloads(Path("x"))
    spots = ["encoder", "decoder.hidden_dims[1]", "encoder._args_[0]", "optimizer",
             "scheduler.step_size", "extra.deep.deeper[0]"]  # fmt: skip
    return [(name, spot) for name in names for spot in spots]


@pytest.mark.parametrize(("payload", "spot"), cases())
def test_foreign_target_is_refused_before_anything_runs(
    tmp_path: Path, payload: str, spot: str
) -> None:
    marker = tmp_path / "marker.pth"
    checkpoint = torch.load(FIXTURES / "vae_mlp.ckpt", weights_only=True)
    checkpoint["hyper_parameters"] = placements(
        checkpoint["hyper_parameters"], payloads(marker)[payload]
    )[spot]
    path = tmp_path / "evil.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError) as err:
        VAE.load_from_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "allow-list" in message
    assert spot in message, message  # the key path is named
    assert not marker.exists()
    assert not (tmp_path / "pwned").exists()


def test_translate_refuses_a_poisoned_checkpoint(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "marker.txt"
    checkpoint = torch.load(FIXTURES / "seq2seq_attn.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["encoder"] = payloads(marker)["builtins.open"]
    path = tmp_path / "evil.ckpt"
    torch.save(checkpoint, path)
    assert translate_main([str(path), "je suis ."]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "allow-list" in err and "encoder._target_" in err
    assert not marker.exists()


def test_kwargs_given_at_load_are_checked_too(tmp_path: Path) -> None:
    marker = tmp_path / "m"
    with pytest.raises(CheckpointError, match="optimizer"):
        Seq2Seq.load_from_checkpoint(
            FIXTURES / "seq2seq_attn.ckpt", optimizer=payloads(marker)["builtins.open"]
        )
    assert not marker.exists()


@pytest.mark.parametrize(
    "name",
    [
        "lightning_modules.nets.vae.MLPEncoder",
        "lightning_modules.nets.seq2seq.Encoder",
        "torch.optim.AdamW",
        "torch.optim.lr_scheduler.CosineAnnealingLR",
    ],
)
def test_litlab_nets_and_torch_optimisers_are_allowed(name: str) -> None:
    assert is_allowed(name)


@pytest.mark.parametrize(
    "name",
    [
        "lightning_modules.base.build",  # a function of litlab's model package
        "lightning_modules.base.MeanMetric",  # imported into it from torchmetrics
        "lightning_modules.nets.vae.torch.save",  # reached through a module attribute
        "lightning_modules.nets.vae.nn.Module",
        "litlab.files.atomic_write",
        "torch.load",
        "torch.optim.lr_scheduler.LambdaLR",  # takes a callable
        "lightning_modules..x",
        "",
        None,
        42,
    ],
)
def test_everything_else_is_refused(name: object) -> None:
    assert not is_allowed(name)
    with pytest.raises(CheckpointError):
        check_targets({"a": [{"_target_": name}]}, source="x.ckpt")
