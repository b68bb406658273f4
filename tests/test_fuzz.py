"""Fuzzing the readers (issue 13): seeded random and mutated files given to the checkpoint loader
and to every data reader; only litlab's own error types (:class:`LitlabError`) may escape.

Each family is generated from one seed, so a failure names a case that can be replayed. The case
counts are asserted (and printed with ``-s``), so the suite cannot silently shrink.
"""

from __future__ import annotations

import gzip
import io
import random
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import datamodules.wikitext2 as wikitext2
from datamodules.eng_fra import EngFraDataModule
from datamodules.mnist import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, read_idx
from datamodules.wikitext2 import WikiText2DataModule
from lightning_modules.vae import VAE
from litlab.builders import CONF_DIR
from litlab.checkpoints import check_checkpoint, load_checkpoint
from litlab.errors import LitlabError, user_error
from litlab.validate import TOP_LEVEL_HINTS, check_config, check_fit

FIXTURES = Path(__file__).resolve().parent / "fixtures"
Mutator = Callable[[random.Random, bytes], bytes]
COUNTS: dict[str, int] = {}


def random_bytes(rng: random.Random, real: bytes) -> bytes:
    return rng.randbytes(rng.randrange(0, 4096))


def truncated(rng: random.Random, real: bytes) -> bytes:
    return real[: rng.randrange(0, len(real))]


def bit_flipped(rng: random.Random, real: bytes) -> bytes:
    data = bytearray(real)
    for _ in range(rng.randrange(1, 9)):
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    return bytes(data)


def zip_header_noise(rng: random.Random, real: bytes) -> bytes:
    return b"PK\x03\x04" + rng.randbytes(rng.randrange(0, 2048))


def zip_with_noise_member(rng: random.Random, real: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", rng.randbytes(rng.randrange(0, 512)))
        if rng.random() < 0.5:
            archive.writestr("archive/version", b"3\n")
    return buffer.getvalue()


def pickle_header_noise(rng: random.Random, real: bytes) -> bytes:
    return bytes([0x80, rng.choice([2, 4, 5])]) + rng.randbytes(rng.randrange(0, 1024))


def regzipped(mutate: Mutator) -> Mutator:
    """Mutate the decompressed content, then gzip it again (a valid gzip of bad data)."""

    def apply(rng: random.Random, real: bytes) -> bytes:
        return gzip.compress(mutate(rng, gzip.decompress(real)), mtime=0)

    apply.__name__ = f"regzipped_{mutate.__name__}"
    return apply


def header_scrambled(rng: random.Random, real: bytes) -> bytes:
    """Random values in the first 16 bytes (an IDX header: magic, dimensions)."""
    data = bytearray(real)
    for i in rng.sample(range(min(16, len(data))), k=rng.randrange(1, 5)):
        data[i] = rng.randrange(256)
    return bytes(data)


def text_mangled(rng: random.Random, real: bytes) -> bytes:
    """Lines dropped, tabs removed, random bytes inserted (often not UTF-8)."""
    lines = real.split(b"\n")
    out = []
    for line in lines:
        roll = rng.random()
        if roll < 0.2:
            continue
        if roll < 0.4:
            line = line.replace(b"\t", b" ")
        elif roll < 0.5:
            line = line + rng.randbytes(rng.randrange(1, 8))
        out.append(line)
    return b"\n".join(out)


def check_family(name: str, mutators: list[Mutator], per: int, real: bytes, seed: int,
                 run: Callable[[bytes, int], None]) -> None:  # fmt: skip
    """Run ``per`` seeded cases of every mutator; only litlab errors may escape."""
    rng = random.Random(seed)
    count = 0
    for mutate in mutators:
        for case in range(per):
            data = mutate(rng, real)
            try:
                run(data, case)
            except LitlabError:
                pass
            except Exception as err:  # noqa: BLE001  (the point: report what escaped)
                pytest.fail(f"{name}/{mutate.__name__} case {case}: {type(err).__name__}: {err}")
            count += 1
    COUNTS[name] = count


@pytest.fixture(scope="module")
def vae() -> VAE:
    return VAE.load_from_checkpoint(FIXTURES / "vae_mlp.ckpt")


def test_checkpoint_loader(tmp_path: Path, vae: VAE) -> None:
    real = (FIXTURES / "vae_mlp.ckpt").read_bytes()
    path = tmp_path / "fuzz.ckpt"

    def run(data: bytes, case: int) -> None:
        path.write_bytes(data)
        load_checkpoint(path)
        check_checkpoint(path, vae, {}, resume=True)

    mutators = [random_bytes, truncated, bit_flipped, zip_header_noise, zip_with_noise_member,
                pickle_header_noise]  # fmt: skip
    check_family("checkpoint", mutators, 25, real, seed=0, run=run)
    assert COUNTS["checkpoint"] == 150


def test_mnist_idx_reader(tmp_path: Path, data_dir: Path) -> None:
    raw = data_dir / "MNIST" / "raw"
    for name, magic, shape, seed in (
        ("t10k-labels-idx1-ubyte.gz", IDX_LABELS_MAGIC, (), 1),
        ("t10k-images-idx3-ubyte.gz", IDX_IMAGES_MAGIC, (28, 28), 2),
    ):
        real = (raw / name).read_bytes()
        path = tmp_path / name

        def run(data: bytes, case: int, path: Path = path, magic=magic, shape=shape) -> None:
            path.write_bytes(data)
            read_idx(path, magic, shape)

        mutators = [random_bytes, truncated, bit_flipped, regzipped(header_scrambled),
                    regzipped(truncated)]  # fmt: skip
        per = 12 if "labels" in name else 4  # the images file is 7.8 MB decompressed
        check_family(f"mnist/{name}", mutators, per, real, seed=seed, run=run)
    assert (
        COUNTS["mnist/t10k-labels-idx1-ubyte.gz"] + COUNTS["mnist/t10k-images-idx3-ubyte.gz"] == 80
    )


def small_gzip_slice(path: Path, lines: int) -> bytes:
    """The first ``lines`` lines of a (gzip'd or plain) text file, gzip'd."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return gzip.compress(b"\n".join(raw.split(b"\n")[:lines]), mtime=0)


def test_eng_fra_reader(tmp_path: Path, data_dir: Path) -> None:
    real = small_gzip_slice(data_dir / "eng-fra" / "eng-fra.txt.gz", 3000)
    folder = tmp_path / "eng-fra"
    folder.mkdir()

    def run(data: bytes, case: int) -> None:
        (folder / "eng-fra.txt.gz").write_bytes(data)
        EngFraDataModule(data_dir=str(tmp_path), sha256=None, download=False).setup("fit")

    mutators = [random_bytes, truncated, bit_flipped, regzipped(text_mangled),
                regzipped(truncated)]  # fmt: skip
    check_family("eng-fra", mutators, 12, real, seed=3, run=run)
    assert COUNTS["eng-fra"] == 60


def test_wikitext2_reader(tmp_path: Path, data_dir: Path, monkeypatch) -> None:
    """Checksums off (they would refuse every mutation before parsing), so the parsing is fuzzed."""
    monkeypatch.setattr(wikitext2, "WIKITEXT2_FILES", dict.fromkeys(wikitext2.WIKITEXT2_FILES))
    source = data_dir / "wikitext-2"
    folder = tmp_path / "wikitext-2"
    folder.mkdir()
    valid = small_gzip_slice(source / "valid.txt", 400)
    test = small_gzip_slice(source / "test.txt", 400)
    real = small_gzip_slice(source / "train.txt.gz", 800)

    def run(data: bytes, case: int) -> None:
        (folder / "train.txt.gz").write_bytes(data)
        (folder / "valid.txt.gz").write_bytes(valid)
        (folder / "test.txt.gz").write_bytes(test)
        module = WikiText2DataModule(data_dir=str(tmp_path), download=False, bptt=35)
        module.setup("fit")
        assert len(module.vocab) > 0

    mutators = [random_bytes, truncated, bit_flipped, regzipped(text_mangled),
                regzipped(truncated)]  # fmt: skip
    check_family("wikitext-2", mutators, 12, real, seed=4, run=run)
    assert COUNTS["wikitext-2"] == 60


# -- configs: random values for the model's and data's keys, built as train.py builds them -------
CONFIG_VALUES: tuple[Any, ...] = (
    -1, 0, 1, 2, 3, 7, 0.5, 1.5, -0.5, 1e-3, 1e40, float("nan"), "x", "relu", True, None,
    [], [0], [3, 5], {"a": 1},
)  # fmt: skip
INTS = (-1, 0, 1, 2, 3, 5, 7, 16, 31)
FLOATS = (-0.5, 0.0, 1e-3, 0.5, 0.999, 1.0, 1.5, 1e40, float("nan"))


def fuzz_value(rng: random.Random, original: Any) -> Any:
    """Mostly a value of the original's type (ints that do not divide, probabilities past 1),
    sometimes anything (wrong types)."""
    if rng.random() < 0.3 or isinstance(original, str | None):
        return rng.choice(CONFIG_VALUES)
    if isinstance(original, bool):
        return not original
    if isinstance(original, int):
        return rng.choice(INTS)
    if isinstance(original, float):
        return rng.choice(FLOATS)
    return [rng.choice(INTS) for _ in range(rng.randrange(0, 4))]  # a list of sizes


MODELS = ("vae_mlp", "vae_cnn", "vae_cnn_deep", "seq2seq_attn", "seq2seq_tutorial",
          "transformer_lm", "transformer_tutorial")  # fmt: skip
WORDS = ["<pad>", "<sos>", "<eos>", "<unk>", "a", "b", "c"]
FACTS = {  # what each data module's model_kwargs() would pass, at toy sizes
    "datamodules.mnist.MNISTDataModule": {},
    "datamodules.eng_fra.EngFraDataModule": {"src_vocab": WORDS, "tgt_vocab": WORDS},
    "datamodules.wikitext2.WikiText2DataModule": {"vocab_size": 50},
}


def config_keys(node: Any, prefix: str) -> list[str]:
    """Dotted keys of every value under ``node`` that is not a ``_target_``-style special."""
    keys = []
    for key in node:
        if str(key).startswith("_"):
            continue
        value = node._get_node(key)
        if isinstance(value, DictConfig):
            keys += config_keys(value, f"{prefix}.{key}")
        else:
            keys.append(f"{prefix}.{key}")
    return keys


def test_model_and_data_configs(tmp_path: Path) -> None:
    """1-3 keys of ``model.*``, ``data.*`` and the top level set to random values (wrong types, signs, NaN, 1e40,
    sizes that do not divide): validation and the constructors either accept the config or fail
    with an error ``train.py`` reports in one line (:func:`litlab.errors.user_error`)."""
    GlobalHydra.instance().clear()
    bases = {}
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for name in MODELS:
            overrides = [
                f"model={name}",
                f"paths.log_dir={tmp_path}",
                f"paths.output_dir={tmp_path}",
            ]
            bases[name] = compose("train", overrides=overrides)
    GlobalHydra.instance().clear()
    rng = random.Random(5)
    count, refused = 0, Counter()
    for name, base in bases.items():
        keys = [
            *TOP_LEVEL_HINTS,
            *config_keys(base.model, "model"),
            *config_keys(base.data, "data"),
        ]
        for case in range(40):
            cfg = base.copy()
            changed = {
                key: fuzz_value(rng, OmegaConf.select(base, key))
                for key in rng.sample(keys, rng.randrange(1, 4))
            }
            for key, value in changed.items():
                OmegaConf.update(cfg, key, value, merge=False)
            try:
                check_config(cfg)
                instantiate(cfg.data)
                facts = FACTS[cfg.data._target_]
                check_fit(cfg.model, facts, cfg.data._target_)
                instantiate(cfg.model, _recursive_=False, _convert_="all", **facts)
            except Exception as err:  # noqa: BLE001  (the point: report what escaped)
                found = user_error(err)
                if found is None:
                    pytest.fail(f"{name} case {case} {changed}: {type(err).__name__}: {err}")
                refused[type(found[1]).__name__] += 1
            count += 1
    COUNTS["configs"] = count
    print(f"configs: {count} cases, refused {sum(refused.values())}: {dict(refused)}")
    assert count == 40 * len(MODELS)
    # neither all accepted nor all refused at one gate: the cases reach the constructors
    assert 0.2 * count < sum(refused.values()) < 0.95 * count
    assert refused["ConfigError"] > 0 and refused["ValueError"] > 0


def test_case_count() -> None:
    """Runs last in this file: the total number of fuzz cases (printed with ``pytest -s``)."""
    print(f"fuzz cases: {sum(COUNTS.values())} ({COUNTS})")
    assert sum(COUNTS.values()) >= 350 + 40 * len(MODELS)
