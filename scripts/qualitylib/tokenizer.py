"""The byte-level BPE tokenizer of a GGUF file whose `tokenizer.ggml.model` is `gpt2` and whose
pre-tokenizer is `smollm` (SmolLM2): every digit is a piece of its own, the rest is split with
GPT-2's pattern, each piece's UTF-8 bytes are mapped to GPT-2's printable characters and merged
by rank.

Python's `re` has no `\\p{L}`; the classes below are exact for ASCII text (the quality text is
ASCII, and `encode` refuses anything else rather than tokenizing it differently from the model's
own tokenizer).
"""
import re

# GPT-2's pattern with \p{L} as [^\W\d_] (letters) and \p{N} as \d (digits; for ASCII, exact).
_PIECE = re.compile(
    r"'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"
)
_DIGIT = re.compile(r"(\d)")


def _byte_characters():
    """GPT-2's map from byte values to printable characters (so merges are text)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class Tokenizer:
    def __init__(self, tokens, merges):
        self.tokens = list(tokens)
        self.ids = {token: index for index, token in enumerate(self.tokens)}
        self.ranks = {}
        for rank, merge in enumerate(merges):
            left, right = merge.split(" ")
            self.ranks[(left, right)] = rank
        self.byte_chars = _byte_characters()
        self.cache = {}

    def pieces(self, text):
        """The pre-tokenizer's pieces of `text`."""
        out = []
        for part in _DIGIT.split(text):
            if not part:
                continue
            if len(part) == 1 and part.isdigit():
                out.append(part)
            else:
                out.extend(_PIECE.findall(part))
        return out

    def _merge(self, piece):
        symbols = [self.byte_chars[b] for b in piece.encode("utf-8")]
        while len(symbols) > 1:
            best, best_rank = None, None
            for i in range(len(symbols) - 1):
                rank = self.ranks.get((symbols[i], symbols[i + 1]))
                if rank is not None and (best_rank is None or rank < best_rank):
                    best, best_rank = i, rank
            if best is None:
                break
            symbols[best:best + 2] = [symbols[best] + symbols[best + 1]]
        return symbols

    def encode(self, text):
        if not text.isascii():
            raise ValueError("the tokenizer's character classes are exact for ASCII text only")
        ids = []
        for piece in self.pieces(text):
            cached = self.cache.get(piece)
            if cached is None:
                cached = [self.ids[symbol] for symbol in self._merge(piece)]
                self.cache[piece] = cached
            ids.extend(cached)
        return ids

    def decode(self, ids):
        inverse = {c: b for b, c in self.byte_chars.items()}
        data = bytes(inverse[c] for i in ids for c in self.tokens[i])
        return data.decode("utf-8", errors="replace")
