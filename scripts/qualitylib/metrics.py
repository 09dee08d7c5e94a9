"""What the quality table reports: perplexity, KL divergence from the reference's next-token
distribution, top-1 agreement with it, a weight error, and bits per weight."""
import numpy as np


def log_softmax(logits):
    """float32 log-probabilities of logits [..., vocab], computed in float64 per row block."""
    out = np.empty(logits.shape, dtype=np.float32)
    flat_in = logits.reshape(-1, logits.shape[-1])
    flat_out = out.reshape(-1, logits.shape[-1])
    for start in range(0, flat_in.shape[0], 256):
        block = flat_in[start:start + 256].astype(np.float64)
        block -= block.max(axis=-1, keepdims=True)
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


def compare(reference, logits):
    """Perplexity, mean KL(reference ‖ model), top-1 agreement of a model's logits."""
    logprobs = log_softmax(logits[:, :-1])
    # KL(p ‖ q) = Σ p (log p − log q) per position; the difference first, so that two
    # entropies of a few nats do not cancel in float32 where KL is 1e-4.
    kl = np.einsum("...v,...v->...", reference.probs, reference.logprobs - logprobs)
    return {
        "perplexity": perplexity(logprobs, reference.targets),
        "kl": float(np.mean(kl)),
        "kl_p99": float(np.percentile(kl, 99)),
        "top1": float(np.mean(logprobs.argmax(axis=-1) == reference.top1)),
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
            difference = approximations[name].astype(np.float64) - original
            error += float(np.sum(difference * difference))
        return float(np.sqrt(error / self.norm))


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
