"""What the quality table reports: perplexity, KL divergence from the reference's next-token
distribution, top-1 agreement with it, a weight error, and bits per weight."""
import numpy as np


def log_softmax(logits):
    """float32 log-probabilities of logits [..., vocab], computed in float64 per row block."""
    out = np.empty(logits.shape, dtype=np.float32)
    flat_in = logits.reshape(-1, logits.shape[-1])
    flat_out = out.reshape(-1, logits.shape[-1])
    for start in range(0, flat_in.shape[0], 256):
        rows = flat_in[start:start + 256]
        # The largest logit of a row is the same in float32; subtracted in float64 (exact).
        block = np.subtract(rows, rows.max(axis=-1, keepdims=True), dtype=np.float64)
        block -= np.log(np.exp(block).sum(axis=-1, keepdims=True))
        flat_out[start:start + 256] = block
    return out


class Reference:
    """The reference model's predictions at the scored positions: every position of a window
    but the last (its next token is in the window)."""

    def __init__(self, logits, windows):
        self.windows = np.asarray(windows)
        self.logprobs = log_softmax(logits[:, :-1])
        self.probs = np.exp(self.logprobs)
        self.top1 = self.logprobs.argmax(axis=-1)
        self.targets = self.windows[:, 1:]

    def perplexity(self):
        return perplexity(self.logprobs, self.targets)


def perplexity(logprobs, targets):
    picked = np.take_along_axis(logprobs, targets[..., None], axis=-1)[..., 0]
    return float(np.exp(-picked.astype(np.float64).mean()))


# Rows of logits taken at a time by `compare`: their float64 copy (25 MB) stays small.
_ROWS = 64


def compare(reference, logits):
    """Perplexity, mean KL(reference ‖ model), top-1 agreement of a model's logits.

    In one pass over blocks of rows: each block's log-probabilities are computed, compared and
    dropped, never the whole [windows, tokens, vocab] array (every row is computed as on its
    own, so the numbers do not depend on the block size)."""
    count, length, vocab = logits.shape
    scored = length - 1
    kl = np.empty((count, scored), dtype=np.float32)
    top = np.empty((count, scored), dtype=np.int64)
    picked = np.empty((count, scored), dtype=np.float32)
    for window in range(count):
        for start in range(0, scored, _ROWS):
            rows = slice(start, min(scored, start + _ROWS))
            logprobs = log_softmax(logits[window, rows])
            # KL(p ‖ q) = Σ p (log p − log q) per position; the difference first, so that two
            # entropies of a few nats do not cancel in float32 where KL is 1e-4.
            kl[window, rows] = np.einsum("rv,rv->r", reference.probs[window, rows],
                                         reference.logprobs[window, rows] - logprobs)
            top[window, rows] = logprobs.argmax(axis=-1)
            targets = reference.targets[window, rows]
            picked[window, rows] = np.take_along_axis(logprobs, targets[:, None], axis=-1)[:, 0]
    return {
        "perplexity": float(np.exp(-picked.astype(np.float64).mean())),
        "kl": float(np.mean(kl)),
        "kl_p99": float(np.percentile(kl, 99)),
        "top1": float(np.mean(top == reference.top1)),
    }


class RelativeFrobenius:
    """‖W − Ŵ‖_F / ‖W‖_F over all weights together; ‖W‖ is summed once, not for every
    configuration."""

    def __init__(self, originals):
        self.originals = originals
        self.norm = sum(float(np.sum(np.square(original, dtype=np.float64)))
                        for original in originals.values())

    def __call__(self, approximations):
        error = 0.0
        for name, original in self.originals.items():
            approximation, original = approximations[name].reshape(-1), original.reshape(-1)
            # In float64, in pieces that stay in the cache.
            for start in range(0, original.size, _PIECE):
                piece = slice(start, start + _PIECE)
                difference = np.subtract(approximation[piece], original[piece], dtype=np.float64)
                error += float(np.dot(difference, difference))
        return float(np.sqrt(error / self.norm))


_PIECE = 1 << 16


def dtype_bits(dtype):
    if dtype[0] in "ui":
        return int(dtype[1:])
    return int(dtype[1:dtype.index("e")])


def bits_per_weight(dtype, group, shapes, scale_bits=16):
    """Code bits plus one scale per group and, for unsigned types, one zero point per group
    counted as a code of the weight type (the way the kernels read them), averaged over the
    weights of `shapes` ([N, K] each). A row of K has ⌈K / group⌉ groups: when the group size
    does not divide K, the last is short and still holds a whole scale (and zero point)."""
    bits = dtype_bits(dtype)
    zero = bits if dtype.startswith("u") else 0
    weights = sum(rows * cols for rows, cols in shapes)
    groups = sum(rows * -(-cols // group) for rows, cols in shapes)
    return bits + (scale_bits + zero) * groups / weights
