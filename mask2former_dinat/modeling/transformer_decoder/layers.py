"""Building blocks of the masked-attention transformer decoder.

Sequences are laid out as Mask2Former (and nn.MultiheadAttention's default) keeps them:
[length, batch, channels]. Each block is a residual sub-layer with a LayerNorm, applied
after the residual sum by default (post-norm) or before the sub-layer (pre-norm).
The published decoder uses no dropout, so these blocks have none.
"""
from torch import nn
from torch.nn import functional as F

__all__ = ["SelfAttentionLayer", "CrossAttentionLayer", "FFNLayer", "MLP"]


def _with_pos(x, pos):
    return x if pos is None else x + pos


def _xavier_init_matrices(module):
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


class SelfAttentionLayer(nn.Module):
    """Self-attention among the queries.

    forward(tgt [Q, B, C], tgt_mask=None, tgt_key_padding_mask=None, query_pos [Q, B, C] or None)
    -> [Q, B, C]. The position embedding is added to queries and keys, not to values.
    """

    def __init__(self, d_model, nhead, normalize_before=False):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead)
        self.norm = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before
        _xavier_init_matrices(self)

    def forward(self, tgt, tgt_mask=None, tgt_key_padding_mask=None, query_pos=None):
        x = self.norm(tgt) if self.normalize_before else tgt
        q = k = _with_pos(x, query_pos)
        out = self.self_attn(q, k, value=x, attn_mask=tgt_mask, key_padding_mask=tgt_key_padding_mask,
                             need_weights=False)[0]
        tgt = tgt + out
        return tgt if self.normalize_before else self.norm(tgt)


class CrossAttentionLayer(nn.Module):
    """Attention from the queries to a flattened feature map.

    forward(tgt [Q, B, C], memory [HW, B, C], memory_mask [B * nhead, Q, HW] bool or None
    (True: the query may not look at that position), memory_key_padding_mask [B, HW] or None,
    pos [HW, B, C] or None, query_pos [Q, B, C] or None) -> [Q, B, C].
    """

    def __init__(self, d_model, nhead, normalize_before=False):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead)
        self.norm = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before
        _xavier_init_matrices(self)

    def forward(self, tgt, memory, memory_mask=None, memory_key_padding_mask=None, pos=None, query_pos=None):
        x = self.norm(tgt) if self.normalize_before else tgt
        out = self.multihead_attn(query=_with_pos(x, query_pos), key=_with_pos(memory, pos), value=memory,
                                  attn_mask=memory_mask, key_padding_mask=memory_key_padding_mask,
                                  need_weights=False)[0]
        tgt = tgt + out
        return tgt if self.normalize_before else self.norm(tgt)


class FFNLayer(nn.Module):
    """Position-wise feed-forward block: Linear -> ReLU -> Linear, residual, LayerNorm.

    forward(tgt [..., C]) -> [..., C].
    """

    def __init__(self, d_model, dim_feedforward=2048, normalize_before=False):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before
        _xavier_init_matrices(self)

    def forward(self, tgt):
        x = self.norm(tgt) if self.normalize_before else tgt
        tgt = tgt + self.linear2(F.relu(self.linear1(x)))
        return tgt if self.normalize_before else self.norm(tgt)


class MLP(nn.Module):
    """A stack of `num_layers` Linear layers with ReLU between them (none after the last).

    forward(x [..., input_dim]) -> [..., output_dim].
    """

    def __init__(self, input_dim, hidden_dim, output_dim, num_layers):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"MLP needs at least one layer, got num_layers={num_layers}")
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x
