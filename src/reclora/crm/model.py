"""The CRM: a DIN-style CTR model (Zhou et al., 2018, "Deep Interest Network") in plain torch.

Representations (d = ``embed_dim``):

* item i:           e_i = [item_emb(i), mean of its genre embeddings]          (2d)
* history entry j:  key k_j = e_{item_j}, rating r_j = rating_emb(rating_j)     (d)
                    value v_j = [k_j, r_j]                                      (3d)
* target item t:    e_t                                                         (2d)
* user:             user_emb(u) and one embedding per user field (gender, ...)

Target attention (DIN's activation unit): a small MLP over
``[k_j, t, k_j - t, k_j * t, r_j]`` gives a scalar weight per history entry.
Its first layer is linear in that concatenation, so it is computed in the
equivalent form ``P k_j + Q t + D (k_j * t) + R r_j`` (the ``k - t`` block folds
into P and Q): the P and R parts are evaluated once per item / rating value on
the embedding tables and gathered, Q once per sample, and only D needs a
product per history entry. As in DIN, weights are **not** softmax-normalised by default
(``attention_softmax=False``): masked entries get weight 0 and the pooled
vector ``sum_j w_j v_j`` keeps the intensity of the user's interest. Set
``attention_softmax=True`` for a masked softmax instead. A masked mean of the
values and log(1 + history length) are added next to the attention pooling.

The MLP over ``[user, user fields, target, attention pooling, mean pooling,
length]`` has hidden sizes ``mlp`` (default (512, 256)), each Linear -> ReLU
-> Dropout; its last hidden vector h (post-activation, before dropout) is the
personal signal the LLM's gates read (``hidden()``), and the logit is
``out(h)`` (one Linear).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from reclora.errors import ConfigError

BATCH_KEYS = ("user", "item", "hist_items", "hist_ratings", "hist_mask")


@dataclass
class CRMConfig:
    """Hyper-parameters of the CRM and its training.

    embed_dim:         d, size of every id/genre/field/rating embedding.
    mlp:               hidden sizes of the prediction MLP; the last one is the size of h (paper: 256).
    attention_hidden:  hidden sizes of DIN's activation unit.
    attention_softmax: False = DIN's unnormalised masked weights; True = masked softmax.
    dropout:           dropout after each MLP hidden layer.
    max_len:           history entries kept (the most recent of the given list).
    lr, weight_decay:  AdamW.
    batch_size, max_epochs, patience: training loop; early stopping on valid AUC.
    seed:              model init, shuffling and dropout.
    hist_items_col, hist_ratings_col: history list columns (``long_item_ids``/``long_ratings`` after retrieval).
    num_threads:       torch intra-op threads while training/predicting (restored afterwards); 0 = leave
                       torch's default. On a CPU shared with other work (or a pod whose CPU limit is
                       below the node's core count) 1 is often several times faster than the default.
    """

    embed_dim: int = 32
    mlp: tuple[int, ...] = (512, 256)
    attention_hidden: tuple[int, ...] = (64, 32)
    attention_softmax: bool = False
    dropout: float = 0.2
    max_len: int = 60
    lr: float = 1e-3
    weight_decay: float = 1e-6
    batch_size: int = 1024
    max_epochs: int = 10
    patience: int = 2
    seed: int = 0
    hist_items_col: str = "hist_item_ids"
    hist_ratings_col: str = "hist_ratings"
    num_threads: int = 0

    def __post_init__(self) -> None:
        self.mlp = tuple(int(x) for x in ([self.mlp] if isinstance(self.mlp, int) else self.mlp))
        ah = self.attention_hidden
        self.attention_hidden = tuple(int(x) for x in ([ah] if isinstance(ah, int) else ah))
        self.validate()

    @property
    def hidden_dim(self) -> int:
        """Size of h, the CRM signal the LLM's gates read: the last MLP hidden size."""
        return self.mlp[-1]

    def validate(self) -> None:
        """Check every field's type and range; raises ConfigError naming the first bad one."""

        def pos_int(name: str, v: Any) -> None:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ConfigError(f"CRM: {name} must be a positive integer, got {v!r}")

        for name in ("embed_dim", "max_len", "batch_size", "max_epochs"):
            pos_int(name, getattr(self, name))
        if not self.mlp:
            raise ConfigError("CRM: mlp needs at least one hidden layer (its last one is h)")
        for v in (*self.mlp, *self.attention_hidden):
            pos_int("mlp/attention_hidden sizes", v)
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 0:
            raise ConfigError(f"CRM: patience must be an integer >= 0, got {self.patience!r}")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"CRM: dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.lr, (int, float)) or not float(self.lr) > 0:
            raise ConfigError(f"CRM: lr must be > 0, got {self.lr!r}")
        if not isinstance(self.weight_decay, (int, float)) or float(self.weight_decay) < 0:
            raise ConfigError(f"CRM: weight_decay must be >= 0, got {self.weight_decay!r}")
        if isinstance(self.num_threads, bool) or not isinstance(self.num_threads, int) or self.num_threads < 0:
            raise ConfigError(f"CRM: num_threads must be an integer >= 0 (0 = torch default), got {self.num_threads!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"CRM: seed must be an integer, got {self.seed!r}")
        for name in ("hist_items_col", "hist_ratings_col"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"CRM: {name} must be a column name")

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-able dict (tuples as lists); :meth:`from_dict` reads it back."""
        d = dataclasses.asdict(self)
        d["mlp"] = list(self.mlp)
        d["attention_hidden"] = list(self.attention_hidden)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> CRMConfig:
        """The config of a mapping (None = all defaults); ConfigError for an unknown key or a bad value."""
        d = dict(d or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"CRM: unknown config keys {unknown}; known: {sorted(known)}")
        return cls(**d)


class DIN(nn.Module):
    """Deep Interest Network over the CRM features. Inputs are the index tensors of ``BATCH_KEYS``.

    ``item_genres`` [n_items, n_genres] (row-normalised multi-hot) and ``user_fields``
    [n_users, n_fields] (indices into one shared field table) are buffers, so a
    batch only carries ids and the history.
    """

    item_genres: torch.Tensor
    user_fields: torch.Tensor

    def __init__(
        self,
        config: CRMConfig,
        n_users: int,
        n_items: int,
        n_ratings: int,
        item_genres: torch.Tensor,
        user_fields: torch.Tensor,
        n_field_values: int,
    ) -> None:
        super().__init__()
        self.config = config
        d = config.embed_dim
        self.register_buffer("item_genres", torch.as_tensor(item_genres, dtype=torch.float32).clone())
        self.register_buffer("user_fields", torch.as_tensor(user_fields, dtype=torch.long).clone())
        self.n_fields = int(self.user_fields.shape[1])
        self.user_emb = nn.Embedding(n_users, d, padding_idx=0)
        self.item_emb = nn.Embedding(n_items, d, padding_idx=0)
        self.genre_emb = nn.Parameter(torch.empty(self.item_genres.shape[1], d))
        self.rating_emb = nn.Embedding(max(n_ratings, 1), d, padding_idx=0)
        self.field_emb = nn.Embedding(max(n_field_values, 1), d)
        for emb in (self.user_emb, self.item_emb, self.rating_emb, self.field_emb):
            nn.init.normal_(emb.weight, std=0.05)
        nn.init.normal_(self.genre_emb, std=0.05)
        with torch.no_grad():
            for emb in (self.user_emb, self.item_emb, self.rating_emb):
                emb.weight[0].zero_()

        # DIN activation unit; first layer in the folded form P k + Q t + D (k*t) + R r
        ah = config.attention_hidden
        self.att_k = nn.Linear(2 * d, ah[0])  # P (and the bias)
        self.att_t = nn.Linear(2 * d, ah[0], bias=False)  # Q
        self.att_kt = nn.Linear(2 * d, ah[0], bias=False)  # D
        self.att_r = nn.Linear(d, ah[0], bias=False)  # R
        layers: list[nn.Module] = [nn.ReLU()]
        for a, b in zip(ah[:-1], ah[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(ah[-1], 1))
        self.att_rest = nn.Sequential(*layers)

        in_dim = d + self.n_fields * d + 2 * d + 3 * d + 3 * d + 1
        mlp: list[nn.Module] = []
        for i, h in enumerate(config.mlp):
            mlp += [nn.Linear(in_dim, h), nn.ReLU()]
            if i < len(config.mlp) - 1:
                mlp.append(nn.Dropout(config.dropout))  # the last layer's dropout is in forward()
            in_dim = h
        self.mlp = nn.Sequential(*mlp)
        self.dropout = nn.Dropout(config.dropout)
        self.out = nn.Linear(in_dim, 1)
        self._log_max_len = math.log1p(config.max_len)

    @classmethod
    def from_featurizer(cls, config: CRMConfig, featurizer: Any) -> DIN:
        """A fresh model sized for ``featurizer``; ID embeddings of ids absent from training are zero."""
        model = cls(
            config,
            n_users=featurizer.n_users,
            n_items=featurizer.n_items,
            n_ratings=featurizer.n_ratings,
            item_genres=torch.from_numpy(featurizer.genre_matrix()),
            user_fields=torch.from_numpy(featurizer.user_field_matrix()),
            n_field_values=sum(featurizer.field_sizes),
        )
        with torch.no_grad():
            # rows that no training sample touches would keep random noise forever: zero them
            model.user_emb.weight[1:][torch.from_numpy(~featurizer.user_seen)] = 0.0
            model.item_emb.weight[1:][torch.from_numpy(~featurizer.item_seen)] = 0.0
        return model

    @property
    def hidden_dim(self) -> int:
        """Width of h [B, hidden_dim] that :meth:`hidden` gives (``config.mlp[-1]``)."""
        return self.config.mlp[-1]

    def _item_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """[len(ids), 2d]: the items' [id embedding, mean of their genre embeddings]."""
        return torch.cat([self.item_emb(ids), self.item_genres[ids] @ self.genre_emb], dim=-1)

    def _features(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        user, item = batch["user"], batch["item"]
        hist, ratings, mask = batch["hist_items"], batch["hist_ratings"], batch["hist_mask"]
        maskf = mask.to(torch.float32)
        # the per-item work runs on an item table: the whole catalogue when it is small against the
        # batch's look-ups (cheapest), else only the rows the batch uses, once each (at ML-25M's 59k
        # items the whole table cost a step about 10% more; the values are the same either way)
        n_items = self.item_emb.num_embeddings
        if n_items * 4 <= item.numel() + hist.numel():
            table = self._item_rows(torch.arange(n_items, device=item.device))
            inv_t, inv_k = item, hist
        else:
            uniq, inv = torch.unique(torch.cat([item, hist.flatten()]), return_inverse=True)
            table = self._item_rows(uniq)  # [U, 2d]
            inv_t, inv_k = inv[: len(item)], inv[len(item) :].view_as(hist)
        t = F.embedding(inv_t, table)  # [B, 2d]
        k = F.embedding(inv_k, table)  # [B, L, 2d]
        r = self.rating_emb(ratings)  # [B, L, d]
        # the per-item and per-rating parts of the first attention layer are computed on the
        # batch's item rows and the (small) rating table and gathered; only D (k*t) needs a
        # per-entry product
        a = (
            F.embedding(inv_k, self.att_k(table))
            + F.embedding(ratings, self.att_r(self.rating_emb.weight))
            + self.att_kt(k * t.unsqueeze(1))
            + self.att_t(t).unsqueeze(1)
        )
        w = self.att_rest(a).squeeze(-1)  # [B, L]
        if self.config.attention_softmax:
            w = w.masked_fill(~mask, float("-inf"))
            w = torch.softmax(w, dim=-1).nan_to_num(0.0)  # all-padding rows -> 0
        else:
            w = w * maskf
        n = maskf.sum(1, keepdim=True)
        wm = torch.stack([w, maskf / n.clamp_min(1.0)], dim=1)  # [B, 2, L]: attention and mean weights
        pooled_k = torch.bmm(wm, k)  # [B, 2, 2d]
        pooled_r = torch.bmm(wm, r)  # [B, 2, d]
        pooled = torch.cat([pooled_k, pooled_r], dim=-1).flatten(1)  # [attention (3d), mean (3d)]
        parts = [self.user_emb(user)]
        if self.n_fields:
            parts.append(self.field_emb(self.user_fields[user]).flatten(1))
        parts += [t, pooled, torch.log1p(n) / self._log_max_len]
        return torch.cat(parts, dim=-1)

    def hidden(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """h [B, hidden_dim]: the last MLP hidden vector (post-ReLU, before dropout)."""
        return self.mlp(self._features(batch))

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Logits [B]."""
        return self.out(self.dropout(self.hidden(batch))).squeeze(-1)

    @torch.no_grad()
    def predict_proba(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Click probabilities sigmoid(logit) [B], computed in eval mode without grad; the train/eval mode is
        restored."""
        was = self.training
        self.eval()
        try:
            return torch.sigmoid(self.forward(batch))
        finally:
            self.train(was)
