"""Checkpoints written by an older litlab still load and predict the same (issue 12).

``tests/fixtures/*.ckpt`` were written by ``tests/fixtures/make_checkpoints.py`` with the code of
commit 7e3d9aa, before the layout changed; ``predictions.pt`` holds what each model predicted then.
"The same" is to float32 rounding (``assert_close``'s float32 tolerances): the fixtures were written
on one CPU, and another CPU's kernels (or a product regrouped, as the Seq2Seq attention keys now
computed once per sentence) round the last bit differently: 6e-8 apart on an Intel Xeon.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(FIXTURES))

from make_checkpoints import MODELS, predict  # noqa: E402

from lightning_modules.seq2seq import Seq2Seq  # noqa: E402
from lightning_modules.transformer_lm import TransformerLM  # noqa: E402
from lightning_modules.vae import VAE  # noqa: E402

CLASSES = {"seq2seq_attn": Seq2Seq, "transformer_lm": TransformerLM}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_old_checkpoint_reloads_and_predicts_the_same(name: str) -> None:
    model = CLASSES.get(name, VAE).load_from_checkpoint(FIXTURES / f"{name}.ckpt")
    expected = torch.load(FIXTURES / "predictions.pt", weights_only=True)[name]
    torch.testing.assert_close(predict(name, model), expected)
