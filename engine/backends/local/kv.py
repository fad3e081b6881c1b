"""Keys and values for the local decoder: one padded batch that rows join and leave, and a store
of finished rows' keys and values so a conversation's next turn reads only what is new.

Why: a conversation's prompt for turn n+1 begins with its prompt and reply of turn n (the agents'
prompts only grow at their end), and `generate` re-read that whole history at every turn — on
two CPU cores, prefill of 8 histories of ~370 tokens took 5.7 s per turn. Keeping each finished
row's keys and values (a few hundred KB per turn) makes a turn's prefill the new lines only.

Layout: each layer holds `[rows, kv_heads, capacity, head_dim]` buffers; a row's real tokens need
not be contiguous (rows are left-padded, and a row that joined with a reused prefix has a gap
between that prefix and its new tokens), so `valid[row, slot]` and `positions[row, slot]` say
which slots hold real tokens and at which position; the masks are built from them.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch

GROW_SLOTS = 256  # capacity is added in steps of this many slots, not at every token
SUPERSEDED_TAIL = 16  # an entry a new one carries all but this many tokens of is dropped


@dataclass
class StoredPrefix:
    """A finished row: the tokens whose keys and values are kept, and those keys and values."""

    ids: torch.Tensor  # [n] long
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer, [1, kv_heads, n, head_dim]


@dataclass
class PrefixStore:
    """Finished rows' keys and values, least recently used dropped first, bounded in tokens."""

    max_tokens: int
    entries: OrderedDict[int, StoredPrefix] = field(default_factory=OrderedDict)
    tokens: int = 0
    _next_key: int = 0

    def put(self, ids: list[int], kv: list[tuple[torch.Tensor, torch.Tensor]], replaces: int | None = None) -> None:
        """Keep a finished row. `replaces`: the entry it began from, dropped when the row carries
        all of it but a few tokens (its own earlier turn: the reply's last tokens are re-read when
        the reply is cut at a stop), so a conversation holds one entry, not one per turn. An
        entry it shared only a beginning with (the other agent's view of the same conversation)
        is kept: it is still the longest match for that agent."""
        stored = torch.tensor(ids, dtype=torch.long)
        source = self.entries.get(replaces) if replaces is not None else None
        if (replaces is not None and source is not None
                and len(source.ids) - _same_beginning(source.ids, stored) <= SUPERSEDED_TAIL):
            del self.entries[replaces]
            self.tokens -= len(source.ids)
        if not ids or len(ids) > self.max_tokens:
            return
        self.entries[self._next_key] = StoredPrefix(stored, kv)
        self._next_key += 1
        self.tokens += len(ids)
        while self.tokens > self.max_tokens:
            _, dropped = self.entries.popitem(last=False)
            self.tokens -= len(dropped.ids)

    def longest_prefix(self, ids: list[int]) -> tuple[int, list[tuple[torch.Tensor, torch.Tensor]] | None, int | None]:
        """The longest stored beginning of `ids` (leaving its last token to be read: its logits are
        needed), as (tokens, their keys and values, the entry's key); (0, None, None) when none."""
        if not self.entries or len(ids) < 2:
            return 0, None, None
        query = torch.tensor(ids[:-1], dtype=torch.long)
        best, best_key = 0, -1
        for key, entry in self.entries.items():
            matched = _same_beginning(entry.ids, query)
            if matched > best:
                best, best_key = matched, key
        if best == 0:
            return 0, None, None
        self.entries.move_to_end(best_key)
        kv = self.entries[best_key].kv
        return best, [(k[:, :, :best], v[:, :, :best]) for k, v in kv], best_key


def _same_beginning(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many tokens two id sequences begin with in common."""
    n = min(len(a), len(b))
    same = a[:n] == b[:n]
    return n if bool(same.all()) else int(torch.argmin(same.to(torch.uint8)))


class BatchKV:
    """The running batch's keys and values; passed to the model as its cache (`update` is the
    only method the attention layers call when masks and positions are given)."""

    def __init__(self, layers: int, rows: int, kv_heads: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device | str) -> None:
        self.shape = (kv_heads, head_dim)
        self.dtype, self.device = dtype, device
        self.keys = [torch.zeros(rows, kv_heads, 0, head_dim, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros_like(k) for k in self.keys]
        self.valid = torch.zeros(rows, 0, dtype=torch.bool, device=device)
        self.positions = torch.zeros(rows, 0, dtype=torch.long, device=device)
        self.length = 0  # slots in use (the same for every row)
        self._writing = 0  # slots the forward pass in progress fills

    @property
    def rows(self) -> int:
        return self.valid.shape[0]

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def reserve(self, slots: int) -> None:
        """Room for `slots` more slots, grown in steps (a copy per step, not per token)."""
        need = self.length + slots
        if need <= self.capacity:
            return
        extra = max(need - self.capacity, GROW_SLOTS)
        for store in (self.keys, self.values):
            for i, t in enumerate(store):
                store[i] = torch.cat([t, t.new_zeros(t.shape[0], t.shape[1], extra, t.shape[3])], 2)
        self.valid = torch.cat([self.valid, self.valid.new_zeros(self.rows, extra)], 1)
        self.positions = torch.cat([self.positions, self.positions.new_zeros(self.rows, extra)], 1)

    def append_slots(self, valid: torch.Tensor, positions: torch.Tensor) -> None:
        """Mark the next `valid.shape[1]` slots (filled by the coming forward pass)."""
        q = valid.shape[1]
        self.reserve(q)
        self.valid[:, self.length:self.length + q] = valid
        self.positions[:, self.length:self.length + q] = positions
        self._writing = q

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + key.shape[2]
        self.keys[layer_idx][:, :, self.length:end] = key
        self.values[layer_idx][:, :, self.length:end] = value
        return self.keys[layer_idx][:, :, :end], self.values[layer_idx][:, :, :end]

    def advance(self) -> None:
        self.length += self._writing
        self._writing = 0

    def masks(self, q: int, sliding_window: int | None) -> dict[str, torch.Tensor]:
        """Boolean masks `[rows, 1, q, length + q]` for the `q` slots being written: a query sees
        the real tokens at or before it (and, for sliding layers, within the window by position);
        every query sees itself, so a padding query's row is never empty (that would be NaN)."""
        end = self.length + q
        valid, pos = self.valid[:, :end], self.positions[:, :end]
        query_slots = torch.arange(self.length, end, device=valid.device)
        causal = torch.arange(end, device=valid.device)[None, :] <= query_slots[:, None]  # [q, end]
        full = valid[:, None, :] & causal[None]
        self_slot = torch.zeros_like(causal)
        self_slot[torch.arange(q), query_slots] = True
        out = {"full_attention": (full | self_slot[None])[:, None]}
        if sliding_window:
            near = (pos[:, -q:, None] - pos[:, None, :]) < sliding_window  # [rows, q, end]
            out["sliding_attention"] = ((full & near) | self_slot[None])[:, None]
        return out

    def row_kv(self, row: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One row's real keys and values, contiguous (copied: the batch's buffers are reused)."""
        slots = self.valid[row, :self.length].nonzero().squeeze(1)
        return [(k[row:row + 1, :, slots].clone(), v[row:row + 1, :, slots].clone())
                for k, v in zip(self.keys, self.values)]

    def keep(self, rows: list[int]) -> None:
        """Drop the other rows, then the leading slots no remaining row uses."""
        index = torch.tensor(rows, dtype=torch.long, device=self.valid.device)
        self.keys = [k.index_select(0, index) for k in self.keys]
        self.values = [v.index_select(0, index) for v in self.values]
        self.valid, self.positions = self.valid.index_select(0, index), self.positions.index_select(0, index)
        used = self.valid[:, :self.length].any(0).nonzero()
        start = int(used[0]) if len(used) else self.length
        if start:
            self.keys = [k[:, :, start:].contiguous() for k in self.keys]
            self.values = [v[:, :, start:].contiguous() for v in self.values]
            self.valid, self.positions = self.valid[:, start:].contiguous(), self.positions[:, start:].contiguous()
            self.length -= start

    def extend(self, other: BatchKV) -> None:
        """Add `other`'s rows, the shorter of the two left-padded to the longer's length."""
        length = max(self.length, other.length)
        mine, theirs = self._padded(length), other._padded(length)
        self.keys = [torch.cat([a, b], 0) for a, b in zip(mine[0], theirs[0])]
        self.values = [torch.cat([a, b], 0) for a, b in zip(mine[1], theirs[1])]
        self.valid, self.positions = torch.cat([mine[2], theirs[2]], 0), torch.cat([mine[3], theirs[3]], 0)
        self.length = length

    def _padded(self, length: int) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
        pad = length - self.length

        def left(t: torch.Tensor, dim: int) -> torch.Tensor:
            t = t.narrow(dim, 0, self.length)
            if not pad:
                return t
            shape = list(t.shape)
            shape[dim] = pad
            return torch.cat([t.new_zeros(shape), t], dim)

        return ([left(k, 2) for k in self.keys], [left(v, 2) for v in self.values],
                left(self.valid, 1), left(self.positions, 1))

    @classmethod
    def from_prefixes(cls, prefixes: list[list[tuple[torch.Tensor, torch.Tensor]] | None], layers: int,
                      kv_heads: int, head_dim: int, dtype: torch.dtype, device: torch.device | str) -> BatchKV:
        """A batch whose rows start from stored prefixes (or nothing), left-padded to the longest."""
        batch = cls(layers, len(prefixes), kv_heads, head_dim, dtype, device)
        lengths = [p[0][0].shape[2] if p else 0 for p in prefixes]
        width = max(lengths)
        batch.reserve(width)
        for row, (prefix, n) in enumerate(zip(prefixes, lengths)):
            if not prefix:
                continue
            for layer, (k, v) in enumerate(prefix):
                batch.keys[layer][row, :, width - n:width] = k[0]
                batch.values[layer][row, :, width - n:width] = v[0]
            batch.valid[row, width - n:width] = True
            batch.positions[row, width - n:width] = torch.arange(n)
        batch.length = width
        return batch
