"""Text rules and vocabularies, shared by the data modules, the models and the command line.

The one neutral home of what both sides of a text study must agree on (pytorch/examples keeps its
``Dictionary`` in ``data.py`` beside a ``model.py`` that imports only torch; litgpt its
``tokenizer.py``): the special tokens and their ids, the tutorial's sentence normalisation, a
:class:`Vocab` that encodes words to ids and decodes ids to words, right-padding with a mask, and
the ignored target index of the loss. Data modules build a :class:`Vocab` from their training
split and hand its words to the model (stored in its checkpoint); the model rebuilds the same
:class:`Vocab` from them. Neither imports the other.
"""

from __future__ import annotations

import re
import unicodedata
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

PAD, SOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<sos>", "<eos>", "<unk>")  # ids 0-3 of a translation vocabulary
EOS_TOKEN, UNK_TOKEN = "<eos>", "<unk>"
IGNORE_INDEX = -100  # a target that is not scored (F.cross_entropy's default ignore_index)

_PUNCT = re.compile(r"([.!?])")
_NON_LETTERS = re.compile(r"[^a-zA-Z.!?]+")
_NON_LETTERS_NO_PERIOD = re.compile(r"[^a-zA-Z!?]+")


@dataclass(frozen=True)
class TextRules:
    """How raw sentences become token sequences; the data module's settings, kept by the model
    so that it translates raw text exactly as its training data was prepared.

    ``keep_period``: the tutorial's older rule (``.`` kept as a token) or its current one (dropped);
    ``append_eos``: ``<eos>`` appended to source and target (report Q12); ``max_length``: both sides
    have fewer words than this (the tutorial's ``MAX_LENGTH``).
    """

    keep_period: bool = True
    append_eos: bool = True
    max_length: int = 10


def unicode_to_ascii(text: str) -> str:
    """Drop combining marks after NFD decomposition: ``"Ça été"`` -> ``"Ca ete"``."""
    if text.isascii():
        return text
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def normalize(text: str, keep_period: bool = True) -> str:
    """The tutorial's ``normalizeString``: ASCII, lower-case, ``.!?`` split off, other non-letters
    (apostrophes, commas, digits, exotic spaces) collapsed to single spaces, ends stripped.

    ``keep_period=False`` applies the tutorial's current rule, which also drops ``.``.
    """
    text = unicode_to_ascii(text.lower().strip())
    text = _PUNCT.sub(r" \1", text)
    return (_NON_LETTERS if keep_period else _NON_LETTERS_NO_PERIOD).sub(" ", text).strip()


class Vocab:
    """Words <-> ids: id i is ``words[i]``; a word outside the vocabulary maps to ``unk``.

    ``unk`` is the id of ``<unk>`` when the vocabulary holds it, else None (then an unknown word
    is an error: :meth:`encode` raises ``KeyError``).
    """

    def __init__(self, words: Sequence[str]) -> None:
        self.words = list(words)
        self.index = {word: i for i, word in enumerate(self.words)}
        self.unk = self.index.get(UNK_TOKEN)

    @classmethod
    def by_frequency(cls, sentences: Iterable[str], min_freq: int = 1) -> Vocab:
        """:data:`SPECIALS`, then the words seen at least ``min_freq`` times, most frequent first
        (ties in alphabetical order): the translation vocabularies."""
        counts = Counter(word for sentence in sentences for word in sentence.split())
        kept = sorted(
            (w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w)
        )
        return cls([*SPECIALS, *kept])

    @classmethod
    def in_order_of_appearance(cls, tokens: Iterable[str]) -> Vocab:
        """Word types in order of first appearance (pytorch/examples' ``Dictionary``)."""
        return cls(list(dict.fromkeys(tokens)))

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self.index

    def encode(self, words: Iterable[str], append_eos: bool = False) -> list[int]:
        """Word ids (unknown words -> ``unk``), with the ``<eos>`` id appended when asked."""
        ids = list(self.ids(words))
        return [*ids, self.index[EOS_TOKEN]] if append_eos else ids

    def ids(self, words: Iterable[str]) -> array:
        """Word ids as a compact ``array('q')`` (for long streams; see :meth:`encode`)."""
        if self.unk is None:
            return array("q", map(self.index.__getitem__, words))
        return array("q", (self.index.get(word, self.unk) for word in words))

    def tensor(self, words: Iterable[str]) -> torch.Tensor:
        """Word ids as one ``int64`` tensor (a token stream)."""
        ids = self.ids(words)
        return torch.frombuffer(ids, dtype=torch.int64) if ids else torch.zeros(0, dtype=torch.long)

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Ids -> words, stopping at ``<eos>`` and dropping ``<pad>`` / ``<sos>`` (translation
        vocabularies, whose specials hold ids 0-3)."""
        words = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i not in (PAD, SOS):
                words.append(self.words[i])
        return words


def pad(
    sequences: Sequence[Sequence[int]], min_length: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad with ``<pad>`` to the longest (or ``min_length``): ids ``(B, T)``, mask ``(B, T)``
    (True on real tokens)."""
    length = max(min_length, max(len(s) for s in sequences))
    ids = torch.full((len(sequences), length), PAD, dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return ids, ids != PAD
