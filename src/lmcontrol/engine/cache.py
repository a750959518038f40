"""The engine's KV cache: preallocated per-layer key/value slots, one slot per running row.

Layout of slot b (columns 0 .. length[b]-1 are in use; the rest is free):

    [kv-prefix (virtual keys) | embeds soft prompt | left pad | prompt tokens | generated tokens ...]

``valid[b, j]`` says whether column j is attended to (pads and unused virtual slots are not). Each row writes its
next token at its own column ``length[b]``, so rows that joined at different steps share the batch without
re-aligning anyone. Running rows occupy slots 0 .. n-1; a finished row's slot is refilled by moving the last row
into it (one row copy), so a step always runs on the contiguous view ``[:n]``.
"""

from __future__ import annotations

import torch


class SlotCache:
    """Static KV storage: keys/values (L, B_cap, H_kv, T_cap, hd), ``valid`` (B_cap, T_cap), ``length`` (B_cap,)."""

    def __init__(
        self,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        *,
        slots: int,
        columns: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.num_layers, self.num_kv_heads, self.head_dim = num_layers, num_kv_heads, head_dim
        self.dtype, self.device = dtype, device
        shape = (num_layers, slots, num_kv_heads, columns, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.valid = torch.zeros(slots, columns, dtype=torch.bool, device=device)
        self.length = torch.zeros(slots, dtype=torch.long, device=device)

    @property
    def slots(self) -> int:
        return self.keys.shape[1]

    @property
    def columns(self) -> int:
        return self.keys.shape[3]

    def reserve(self, slots: int, columns: int) -> None:
        """Grow to at least ``slots`` x ``columns`` (copying what is stored); never shrinks."""
        if slots <= self.slots and columns <= self.columns:
            return
        new_slots, new_cols = max(slots, self.slots), max(columns, self.columns)
        grown = SlotCache(
            self.num_layers,
            self.num_kv_heads,
            self.head_dim,
            slots=new_slots,
            columns=new_cols,
            dtype=self.dtype,
            device=self.device,
        )
        b, t = self.slots, self.columns
        grown.keys[:, :b, :, :t] = self.keys
        grown.values[:, :b, :, :t] = self.values
        grown.valid[:b, :t] = self.valid
        grown.length[:b] = self.length
        self.keys, self.values, self.valid, self.length = grown.keys, grown.values, grown.valid, grown.length

    def clear(self, slot: int) -> None:
        self.valid[slot] = False
        self.length[slot] = 0

    def move(self, src: int, dst: int) -> None:
        """Copy row ``src`` into slot ``dst`` (used to keep running rows contiguous) and clear ``src``."""
        t = int(self.length[src])
        self.keys[:, dst, :, :t] = self.keys[:, src, :, :t]
        self.values[:, dst, :, :t] = self.values[:, src, :, :t]
        self.valid[dst] = self.valid[src]
        self.length[dst] = self.length[src]
        self.clear(src)

    def write_prefix(self, start: int, kv: list[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor) -> None:
        """Place per-layer KV prefixes (each (A, H_kv, m, hd)) at columns 0..m-1 of slots start..start+A-1."""
        a, m = mask.shape
        for layer, (k, v) in enumerate(kv):
            self.keys[layer, start : start + a, :, :m] = k.to(self.dtype)
            self.values[layer, start : start + a, :, :m] = v.to(self.dtype)
        self.valid[start : start + a, :m] = mask
        self.length[start : start + a] = m

    def decode_mask(self, n: int, used: int) -> torch.Tensor | None:
        """Attention mask (n, 1, 1, used) for a decode step whose new tokens are already marked valid; None when
        every column is valid (the unmasked fast path, as transformers takes it)."""
        valid = self.valid[:n, :used]  # (n, used)
        if bool(valid.all()):
            return None
        return valid[:, None, None, :]
