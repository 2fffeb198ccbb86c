"""A word-level tokenizer over the course's small, fixed caption vocabularies.

A vocabulary is every word of one caption grammar in `captions.py` ("classes": Part I and II's single-garment
captions; "scenes": Part III's two-garment scenes), plus `<pad>` and `<bos>`.
Every encoded caption starts with `<bos>`, so even the empty caption "" (the unconditional one used by
classifier-free guidance) has one real token for attention to look at.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import torch
from torch import Tensor

from .captions import parse_scene, split_words, vocabulary

PAD, BOS = "<pad>", "<bos>"


class Tokenizer:
    """Maps captions to LongTensor ids [B, S] (padded with <pad>=0, each row starting with <bos>=1) and back."""

    def __init__(self, grammar: str = "classes") -> None:
        self.grammar = grammar
        self.vocab: list[str] = [PAD, BOS] + vocabulary(grammar)
        self.ids = {w: i for i, w in enumerate(self.vocab)}
        self.pad_id, self.bos_id = self.ids[PAD], self.ids[BOS]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def _ids(self, text: str) -> list[int]:
        if self.grammar == "scenes" and text.strip():
            parse_scene(text)  # words in the vocabulary are not enough: the caption must follow the grammar
        ids = [self.bos_id]
        for word in split_words(text):
            if word not in self.ids:
                words = self.vocab[2:]
                close = difflib.get_close_matches(word, words, n=3, cutoff=0.6)
                hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
                if not word.isascii():
                    hint += "the model reads English captions only; "
                raise ValueError(
                    f"caption word {word!r} (in {text!r}) is not in the vocabulary; {hint}"
                    f"the model knows only these words: {', '.join(words)}"
                )
            ids.append(self.ids[word])
        if len(ids) == 1 and text.strip():  # only punctuation: refuse rather than draw unconditionally
            raise ValueError(f"caption {text!r} has no words; use '' for the empty (unconditional) caption")
        return ids

    def encode(self, texts: str | Sequence[str], max_len: int | None = None, limit: int | None = None) -> Tensor:
        """One caption or a list -> LongTensor [B, S], S = longest caption + 1 (<bos>), or `max_len` if given.
        Captions longer than `max_len` (or `limit`, which refuses without padding) tokens raise ValueError."""
        if not isinstance(texts, (str, Sequence)) or isinstance(texts, Tensor):
            raise ValueError(f"captions must be a string or a list of strings; got {type(texts).__name__}")
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ValueError("no captions given: pass a caption or a list of them ('' is the empty caption)")
        for text in texts:
            if not isinstance(text, str):
                raise ValueError(f"captions must be strings; got {type(text).__name__} {text!r:.40}")
        rows = [self._ids(t) for t in texts]
        longest = max(len(r) for r in rows)
        most = max_len if max_len is not None else limit
        if most is not None and longest > most:
            raise ValueError(f"caption {texts[[len(r) for r in rows].index(longest)]!r} has {longest - 1} words "
                             f"but this model reads at most {most - 1}")
        width = max_len or longest
        return torch.tensor([r + [self.pad_id] * (width - len(r)) for r in rows], dtype=torch.long)

    def tokens(self, captions, max_len: int, pad: bool = False, values: bool = True) -> Tensor:
        """What a caption-reading model accepts: strings (tokenized here; `pad` pads them to `max_len`) or tokens
        [B, S] of any integer dtype with S <= max_len, as a LongTensor; anything else is a ValueError that says
        what to pass. values=False skips the vocabulary check that reads the values (a GPU sync in training)."""
        if isinstance(captions, (str, list, tuple)):
            captions = self.encode(captions, max_len=max_len) if pad else self.encode(captions, limit=max_len)
        if not isinstance(captions, Tensor) or captions.dim() != 2 or captions.is_floating_point() \
                or captions.is_complex():
            is_tensor = isinstance(captions, Tensor)
            got = f"{captions.dtype} {list(captions.shape)}" if is_tensor else type(captions).__name__
            raise ValueError(f"caption tokens must be a LongTensor [B, S]; got {got}: pass captions as strings "
                             f"or use Tokenizer().encode(captions)")
        if captions.size(1) > max_len:
            raise ValueError(f"caption tokens [B, S={captions.size(1)}] are longer than this model reads: at most "
                             f"{max_len} tokens (<bos> + {max_len - 1} words)")
        if values and captions.numel() and (captions.min() < 0 or captions.max() >= self.vocab_size):
            raise ValueError("caption tokens are outside the vocabulary: use Tokenizer().encode(captions)")
        return captions.long()

    def decode(self, ids: Tensor) -> list[str]:
        """LongTensor [B, S] (or [S], or lists of ids) -> captions, dropping <bos> and <pad>."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"token ids must be in [0, {self.vocab_size}); got {int(ids.min())}..{int(ids.max())}")
        ids = ids.view(-1, ids.size(-1)) if ids.dim() else ids.view(1, 1)
        return [" ".join(self.vocab[i] for i in row.tolist() if i > self.bos_id) for row in ids]
