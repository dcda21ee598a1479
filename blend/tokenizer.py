"""A word-level tokenizer for the shapes world, saved in Hugging Face `tokenizers` format.

Why not CLIP's BPE: its 49,408-token embedding table alone would be 25 MB of a model whose whole world
has 32 words. A WordLevel `tokenizer.json` loads through `transformers.AutoTokenizer`, so open_clip's
`HFTokenizer` (via `local-dir:`) and the GPT-2 text inverter both read it with no code of ours.
"""
from __future__ import annotations

import re
from pathlib import Path

from .world import VOCAB_WORDS

PAD, UNK, EOS, BOS = "[PAD]", "[UNK]", "[EOS]", "[BOS]"
SPECIALS = (PAD, UNK, EOS, BOS)  # ids 0..3: pad 0 (open_clip pad_id), eos 2 (open_clip eos_id)


def build_word_tokenizer(words=VOCAB_WORDS, max_length: int = 16, punctuation: str = ""):
    """A `PreTrainedTokenizerFast`: lowercase, drop punctuation, split on whitespace, [BOS] text [EOS].

    `punctuation`: marks kept as tokens of their own (the text inverter's tokenizer keeps "," so that the
    sentences it writes are captions as the world spells them; CLIP's drops it).
    """
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + tuple(words) + tuple(punctuation))}
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Lowercase(), normalizers.Replace(Regex(rf"[^\w\s{re.escape(punctuation)}]"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, unk_token=UNK, eos_token=EOS, bos_token=BOS,
        model_max_length=max_length, padding_side="right", clean_up_tokenization_spaces=bool(punctuation),
    )


def save_word_tokenizer(folder: str | Path, words=VOCAB_WORDS, max_length: int = 16, punctuation: str = ""):
    tok = build_word_tokenizer(words, max_length, punctuation)
    tok.save_pretrained(str(folder))
    return tok
