"""The local model's linear layers as fbgemm packed weights, for generation and scoring on CPU.

Why (2 cores, Gemma 3 270M, 8 rows decoding ~370-token histories): float32 matmuls at a few rows
are bound by reading 1 GB of weights per step (264 ms a step). fbgemm's fp16 kernels (weights
stored fp16, arithmetic in fp32) take 86 ms at the same perplexity (53.50 on the README; the GGUF
weights are 4-bit, so fp16 holds them exactly). `fp16-int8-head` also makes the 262k-token output
projection int8 per output row (activations quantised per call): 74 ms, perplexity 56.1. Layers
in int8 doubled perplexity, so that is not offered.

Packing costs seconds at every load (the 262k-row head alone took 5 s; torch.ao's
quantize_dynamic packed every layer twice, 11 s in all), so the head is packed in row blocks and
all packing runs on a thread per core (fbgemm releases the GIL). Not for training: packed layers
have no gradients.
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

HEAD_BLOCKS = 4  # row blocks of the output projection, packed in parallel


class PackedLinear(torch.nn.Module):
    """A linear layer whose weight lives in fbgemm packed row blocks of its output."""

    def __init__(self, blocks: list[Any], kind: str, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.blocks, self.kind, self.bias = blocks, kind, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1]).float()
        if self.kind == "fp16":
            outs = [torch.ops.quantized.linear_dynamic_fp16(flat, b) for b in self.blocks]
        else:
            outs = [torch.ops.quantized.linear_dynamic(flat, b, reduce_range=True) for b in self.blocks]
        y = outs[0] if len(outs) == 1 else torch.cat(outs, -1)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], y.shape[-1]).to(x.dtype)


def convert_for_cpu_inference(model: Any, weights: str) -> Any:
    """Replace every `nn.Linear` of a CPU model by a `PackedLinear` (in place); `fp32` keeps it."""
    if weights == "fp32" or model.device.type != "cpu":
        return model
    head = model.get_output_embeddings()
    jobs = []
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, torch.nn.Linear):
                kind = "int8" if child is head and weights == "fp16-int8-head" else "fp16"
                blocks = torch.chunk(child.weight.detach(), HEAD_BLOCKS if child is head else 1, dim=0)
                jobs.append((parent, name, child, kind, blocks))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        packed = [[pool.submit(_pack, block, kind) for block in blocks] for *_, kind, blocks in jobs]
        for (parent, name, linear, kind, _), futures in zip(jobs, packed):
            bias = None if linear.bias is None else linear.bias.detach()
            setattr(parent, name, PackedLinear([f.result() for f in futures], kind, bias))
    return model


def _pack(weight: torch.Tensor, kind: str) -> Any:
    if kind == "fp16":
        return torch.ops.quantized.linear_prepack_fp16(weight.float().contiguous(), None)
    scales = (weight.abs().amax(dim=1) / 127.5).clamp(min=1e-8).double()  # symmetric, per output row
    zero = torch.zeros(len(scales), dtype=torch.long)
    with warnings.catch_warnings():  # qint8 tensors are deprecated (torch 2.13); fp16 packing does not use them
        warnings.simplefilter("ignore")
        qweight = torch.quantize_per_channel(weight.float(), scales, zero, 0, torch.qint8)
    return torch.ops.quantized.linear_prepack(qweight, None)
