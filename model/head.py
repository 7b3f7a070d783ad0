"""The lm_head and the cross-entropy fused, chunk by chunk, so the (N, V) logits never persist.

For a 50,257-way vocabulary the head is ~71% of the `mini` model's matmul FLOPs (REFERENCE,
Training), and the plain path (logits -> fp32 copy -> log_softmax -> NLL, then the same tensors
again backwards, plus a zero-filled gradient the size of the logits) spends about as long
moving (B*T, V) tensors through memory as multiplying. Here each chunk of rows computes its
logits, log-sum-exp and loss, and right away the gradient of the loss with respect to its
logits (softmax - one-hot), which goes straight into the two backward matmuls: the forward
pass leaves only grad_x (N, d) and grad_weight (V, d) for backward to scale. The idea is
Liger-Kernel's fused linear cross-entropy, written here in plain PyTorch.

Columns past `vocab_size` (the padding of model.gpt.padded_vocab_size) get -inf logits, so
they take no probability and no gradient.
"""

from __future__ import annotations

import torch

# Rows per chunk: 2,048 x 50,304 fp32 logits are 412 MB, bounded whatever the batch size.
CHUNK_ROWS = 2048


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, targets, vocab_size, dtype, needs_grad):
        N = x.size(0)
        xc, wc = x.to(dtype), weight.to(dtype)
        total = torch.zeros((), dtype=torch.float32, device=x.device)
        grad_x = torch.empty_like(x) if needs_grad else None
        grad_w = (
            torch.zeros(weight.shape, dtype=torch.float32, device=x.device) if needs_grad else None
        )
        for start in range(0, N, CHUNK_ROWS):
            h, t = xc[start : start + CHUNK_ROWS], targets[start : start + CHUNK_ROWS]
            logits = (h @ wc.t()).float()  # (n, Vp)
            if logits.size(1) > vocab_size:
                logits[:, vocab_size:] = float("-inf")  # padded ids: probability 0
            lse = torch.logsumexp(logits, dim=1)  # (n,)
            total += (lse - logits.gather(1, t.unsqueeze(1)).squeeze(1)).sum()
            if not needs_grad:
                continue
            g = logits.sub_(lse.unsqueeze(1)).exp_()  # softmax, in place: d(sum CE)/d logits
            g[torch.arange(len(t), device=t.device), t] -= 1.0  # ... minus the one-hot target
            g = g.to(dtype)
            grad_x[start : start + CHUNK_ROWS] = g @ wc  # (n, d)
            grad_w += (g.t() @ h).float()  # (Vp, d)
        if needs_grad:
            ctx.save_for_backward(grad_x, grad_w)
            ctx.weight_dtype = weight.dtype
        return total / N

    @staticmethod
    def backward(ctx, grad_loss):
        grad_x, grad_w = ctx.saved_tensors
        scale = grad_loss / grad_x.size(0)  # the loss is the mean over rows
        return grad_x * scale, (grad_w * scale).to(ctx.weight_dtype), None, None, None, None


@torch.compiler.disable  # eager by design: already fused by hand; the body around it compiles
def linear_cross_entropy(
    x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab_size: int
) -> torch.Tensor:
    """Mean cross-entropy of logits x @ weight.T (columns < vocab_size) against targets.

    x (N, d), weight (Vp, d), targets (N,) in [0, vocab_size). Under autocast the matmuls run in
    the autocast dtype and the softmax in fp32, as the plain path would.
    """
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    with torch.autocast(device, enabled=False):
        return _LinearCrossEntropy.apply(x, weight, targets, vocab_size, dtype, needs_grad)
