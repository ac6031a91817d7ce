"""Recurrent (LSTM) policies: the model, and how rows become padded, masked sequences.

Sampling: the rollout worker keeps one LSTM state ``(h, c)`` per env, feeds it to the policy
with each observation and stores the state *before* each step in the ``state_in_h`` /
``state_in_c`` columns; the state is zeroed whenever an env's episode ends (terminated or
truncated: the vector env then already shows the reset observation) and at the first reset.

Learning: a batch (possibly concatenated from many fragments and workers) is cut into
sequences of at most ``max_seq_len`` rows, also wherever the trajectory breaks (the episode
ended, ``env_id``/``eps_id`` changes, the step counter ``t`` does not go on by one). Each
sequence starts from the state stored at its first row, so no sequence needs its predecessor.
Sequences are padded to the longest one in the batch; losses average over the valid steps only
(:data:`SEQ_MASK`), and minibatches are made of whole sequences. This is the recipe of R2D2
(Kapturowski et al. 2019, "stored state" strategy) and of RLlib's ``max_seq_len``.

Example::

    >>> import numpy as np
    >>> cols = {"terminateds": np.array([0, 0, 1, 0, 0], bool), "t": np.array([0, 1, 2, 0, 1])}
    >>> sequence_starts(cols, max_seq_len=2).tolist()
    [True, False, True, True, False]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from rldataflow.policies.models import _linear, init_layer, make_encoder

__all__ = [
    "SEQ_MASK",
    "STATE_IN_C",
    "STATE_IN_H",
    "STATE_OUT_C",
    "STATE_OUT_H",
    "RecurrentActorCriticModel",
    "RecurrentQModel",
    "Sequences",
    "masked_mean",
    "sequence_starts",
]

#: LSTM state before each step (``(B, cell)`` float32 columns, written by the rollout worker)
STATE_IN_H = "state_in_h"
STATE_IN_C = "state_in_c"
#: the state after the step, returned by ``compute_actions`` (the worker keeps it, not the batch)
STATE_OUT_H = "state_out_h"
STATE_OUT_C = "state_out_c"
#: float 1/0 per padded slot of a sequence minibatch: 1 for a real step, 0 for padding
SEQ_MASK = "seq_mask"
#: per-sequence columns of a padded minibatch (not per row)
SEQ_LENS = "seq_lens"
#: optional bool column: rows that start a sequence (overrides :func:`sequence_starts`)
SEQ_STARTS = "seq_starts"
#: padded-slot -> original row index (-1 for padding), for per-row outputs
ROW_INDEX = "seq_row_index"


def sequence_starts(columns: Mapping[str, np.ndarray], max_seq_len: int) -> np.ndarray:
    """Rows that start a new sequence: the first row, every row after a trajectory break (the
    previous row terminated or was truncated, ``env_id``/``eps_id`` changes, ``t`` does not go
    on by one) and every ``max_seq_len``-th row within an unbroken run. Missing columns are not
    used."""
    term = np.asarray(columns["terminateds"], dtype=bool)
    n = len(term)
    if max_seq_len < 1:
        raise ValueError(f"max_seq_len must be >= 1, got {max_seq_len}")
    brk = np.zeros(n, dtype=bool)
    if n == 0:
        return brk
    brk[0] = True
    ended = term.copy()
    if "truncateds" in columns:
        ended |= np.asarray(columns["truncateds"], dtype=bool)
    brk[1:] |= ended[:-1]
    for key in ("env_id", "eps_id"):
        if key in columns:
            col = np.asarray(columns[key])
            brk[1:] |= col[1:] != col[:-1]
    if "t" in columns:
        t = np.asarray(columns["t"])
        brk[1:] |= t[1:] != t[:-1] + 1
    # position of each row within its unbroken run; cut the run every max_seq_len rows
    run_start = np.maximum.accumulate(np.where(brk, np.arange(n), 0))
    return brk | ((np.arange(n) - run_start) % max_seq_len == 0)


def masked_mean(x: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``x.mean()``, or the mean over the valid steps when ``batch`` is a padded sequence
    minibatch (it holds :data:`SEQ_MASK`)."""
    mask = batch.get(SEQ_MASK)
    if mask is None:
        return x.mean()
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


class Sequences:
    """The sequences of a flat batch, and padded, masked minibatches made of whole sequences.

    ``index[s, j]`` is the row of step ``j`` of sequence ``s`` (0 for padding), ``mask[s, j]``
    whether that slot is a real step; sequences are padded to the longest one.

    Example::

        >>> import numpy as np, torch
        >>> seqs = Sequences(np.array([True, False, False, True, False]))
        >>> seqs.lens.tolist(), seqs.index.tolist()
        ([3, 2], [[0, 1, 2], [3, 4, 0]])
        >>> mb = seqs.pad({"x": torch.arange(5.0)}, np.array([1]))
        >>> mb["x"].tolist(), mb["seq_mask"].tolist()
        ([3.0, 4.0, 0.0], [1.0, 1.0, 0.0])
    """

    def __init__(self, starts: np.ndarray) -> None:
        starts = np.asarray(starts, dtype=bool)
        n = len(starts)
        self.start_rows = np.flatnonzero(starts)
        if n and (not len(self.start_rows) or self.start_rows[0] != 0):
            raise ValueError("the first row must start a sequence")
        self.lens = np.diff(np.append(self.start_rows, n))
        self.max_len = int(self.lens.max()) if len(self.lens) else 0
        offsets = np.arange(self.max_len)
        self.mask = offsets[None, :] < self.lens[:, None]
        self.index = np.where(self.mask, self.start_rows[:, None] + offsets[None, :], 0)

    @property
    def count(self) -> int:
        return len(self.start_rows)

    def pad(self, tensors: Mapping[str, torch.Tensor], seqs: Any = None) -> dict[str, torch.Tensor]:
        """A padded minibatch of the sequences ``seqs`` (indices; all when ``None``).

        Per-row columns become ``(S * L, ...)`` (time-major within each sequence, flattened, so
        row-wise losses apply unchanged); the state columns become the ``(S, cell)`` states at
        each sequence's first row; :data:`SEQ_MASK` is the ``(S * L,)`` float mask,
        :data:`SEQ_LENS` the ``(S,)`` lengths and :data:`ROW_INDEX` the row of each slot
        (-1 for padding).
        """
        if seqs is None:
            seqs = np.arange(self.count)
        seqs = np.asarray(seqs, dtype=np.int64)
        index = torch.from_numpy(self.index[seqs].reshape(-1))
        mask = self.mask[seqs].reshape(-1)
        starts = torch.from_numpy(self.start_rows[seqs])
        out: dict[str, torch.Tensor] = {}
        for key, value in tensors.items():
            if key in (STATE_IN_H, STATE_IN_C):
                out[key] = value[starts]
            else:
                out[key] = value[index]
        out[SEQ_MASK] = torch.from_numpy(mask.astype(np.float32))
        out[SEQ_LENS] = torch.from_numpy(self.lens[seqs])
        out[ROW_INDEX] = torch.from_numpy(np.where(mask, self.index[seqs].reshape(-1), -1))
        return out


class RecurrentActorCriticModel(nn.Module):
    """Encoder -> LSTM -> policy and value heads, for memory tasks (partially observed envs).

    The encoder is the one :func:`~rldataflow.policies.models.make_encoder` picks (MLP for
    vectors, CNN for ``uint8`` images); both heads read the LSTM output, so the value function
    sees the memory too. The LSTM state is a pair ``(h, c)`` of ``(B, cell_size)`` tensors.

    * :meth:`forward_step` -- one step for a batch of envs (sampling);
    * :meth:`forward_seq` -- ``(S, L, ...)`` padded sequences from their start states (learning).

    Example::

        >>> m = RecurrentActorCriticModel((2,), np.float32, action_dist_dim=2, cell_size=8)
        >>> h, c = m.initial_state(3)
        >>> logits, values, (h, c) = m.forward_step(torch.zeros(3, 2), h, c)
        >>> logits.shape, values.shape, h.shape
        (torch.Size([3, 2]), torch.Size([3]), torch.Size([3, 8]))
        >>> logits, values, _ = m.forward_seq(torch.zeros(3, 5, 2), *m.initial_state(3))
        >>> logits.shape, values.shape
        (torch.Size([3, 5, 2]), torch.Size([3, 5]))
    """

    is_recurrent = True

    def __init__(
        self,
        obs_shape: Sequence[int],
        obs_dtype: np.dtype | str | type,
        action_dist_dim: int,
        hiddens: Sequence[int] = (64,),
        activation: str = "tanh",
        cell_size: int = 64,
        free_log_std: bool = False,
        init_log_std: float = 0.0,
    ) -> None:
        super().__init__()
        self.obs_ndim = len(tuple(obs_shape))
        self.cell_size = int(cell_size)
        self.encoder = make_encoder(obs_shape, obs_dtype, hiddens, activation)
        self.lstm = nn.LSTM(self.encoder.out_dim, self.cell_size, batch_first=True)
        self.free_log_std = free_log_std
        if free_log_std:
            if action_dist_dim % 2:
                raise ValueError("free_log_std needs an even action_dist_dim ([mean, log_std])")
            n_out = action_dist_dim // 2
            self.log_std = nn.Parameter(torch.full((n_out,), float(init_log_std)))
        else:
            n_out = action_dist_dim
        self.pi_head = init_layer(nn.Linear(self.cell_size, n_out), std=0.01)
        self.vf_head = init_layer(nn.Linear(self.cell_size, 1), std=1.0)

    def initial_state(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero ``(h, c)`` for ``batch_size`` sequences (the state at an episode start)."""
        zeros = torch.zeros(int(batch_size), self.cell_size)
        return zeros, zeros.clone()

    def _heads(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dist_inputs = _linear(self.pi_head, out)
        if self.free_log_std:
            dist_inputs = torch.cat([dist_inputs, self.log_std.expand_as(dist_inputs)], dim=-1)
        return dist_inputs, _linear(self.vf_head, out).squeeze(-1)

    def forward_step(self, obs: torch.Tensor, h: torch.Tensor, c: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``(dist_inputs, values, (h, c))`` for one step of ``B`` envs."""
        x = self.encoder(obs)
        p = self.lstm._parameters
        # the fused cell on nn.LSTM's own weights: ~3x cheaper than nn.LSTM on a length-1 input
        h, c = torch.lstm_cell(x, (h, c), p["weight_ih_l0"], p["weight_hh_l0"],
                               p["bias_ih_l0"], p["bias_hh_l0"])
        dist_inputs, values = self._heads(h)
        return dist_inputs, values, (h, c)

    def forward_seq(self, obs: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor,
                    lens: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``(dist_inputs (S, L, D), values (S, L), (h, c))`` for padded sequences ``obs`` of
        shape ``(S, L, *obs_shape)`` starting from ``(h0, c0)``.

        Outputs at padded slots are meaningless (the LSTM is causal, so they never reach the
        valid ones). The returned state is the one after each sequence's last *valid* step
        when ``lens`` is given (packed run), after step ``L`` otherwise.
        """
        s, length = obs.shape[0], obs.shape[1]
        x = self.encoder(obs.reshape(s * length, *obs.shape[2:])).reshape(s, length, -1)
        state = (h0.unsqueeze(0).contiguous(), c0.unsqueeze(0).contiguous())
        if lens is None:
            out, (hn, cn) = self.lstm(x, state)
        else:
            packed = nn.utils.rnn.pack_padded_sequence(x, lens.cpu(), batch_first=True,
                                                       enforce_sorted=False)
            out, (hn, cn) = self.lstm(packed, state)
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                      total_length=length)
        dist_inputs, values = self._heads(out)
        return dist_inputs, values, (hn[0], cn[0])

    def forward_padded(self, batch: Mapping[str, torch.Tensor], obs_key: str = "obs"
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(dist_inputs, values)`` per slot of a padded minibatch (:meth:`Sequences.pad`),
        flattened to ``(S * L, ...)`` like its columns."""
        h0, c0 = batch[STATE_IN_H], batch[STATE_IN_C]
        s = h0.shape[0]
        obs = batch[obs_key]
        obs = obs.reshape(s, obs.shape[0] // s, *obs.shape[1:])
        dist_inputs, values, _ = self.forward_seq(obs, h0, c0)
        return dist_inputs.reshape(-1, dist_inputs.shape[-1]), values.reshape(-1)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row as a sequence of one step from the zero state (for code that treats the
        model as feed-forward; recurrent code calls :meth:`forward_step` / :meth:`forward_seq`)."""
        h, c = self.initial_state(obs.shape[0])
        dist_inputs, values, _ = self.forward_step(obs, h, c)
        return dist_inputs, values


class RecurrentQModel(nn.Module):
    """Encoder -> LSTM -> (dueling) Q head: the recurrent Q network of R2D2.

    * :meth:`forward_step` -- ``(q (B, A), None, (h, c))`` for one step of ``B`` envs (the
      ``None`` stands where an actor-critic model returns values);
    * :meth:`forward_seq` -- ``(q (S, L, A), (h, c))`` for padded sequences from start states.

    With ``dueling`` the head is ``V + A - mean_a A`` (Wang et al. 2016), as in R2D2.

    Example::

        >>> m = RecurrentQModel((2,), np.float32, num_actions=3, cell_size=8)
        >>> q, _, (h, c) = m.forward_step(torch.zeros(4, 2), *m.initial_state(4))
        >>> q.shape, h.shape
        (torch.Size([4, 3]), torch.Size([4, 8]))
        >>> m.forward_seq(torch.zeros(4, 6, 2), *m.initial_state(4))[0].shape
        torch.Size([4, 6, 3])
    """

    is_recurrent = True

    def __init__(self, obs_shape: Sequence[int], obs_dtype: np.dtype | str | type,
                 num_actions: int, hiddens: Sequence[int] = (64,), activation: str = "relu",
                 cell_size: int = 64, dueling: bool = True) -> None:
        super().__init__()
        self.cell_size = int(cell_size)
        self.encoder = make_encoder(obs_shape, obs_dtype, hiddens, activation)
        self.lstm = nn.LSTM(self.encoder.out_dim, self.cell_size, batch_first=True)
        self.advantage_head = init_layer(nn.Linear(self.cell_size, int(num_actions)), std=1.0)
        self.value_head = init_layer(nn.Linear(self.cell_size, 1), std=1.0) if dueling else None

    def initial_state(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero ``(h, c)`` for ``batch_size`` sequences (the state at an episode start)."""
        zeros = torch.zeros(int(batch_size), self.cell_size)
        return zeros, zeros.clone()

    def _q(self, out: torch.Tensor) -> torch.Tensor:
        adv = _linear(self.advantage_head, out)
        if self.value_head is None:
            return adv
        return _linear(self.value_head, out) + adv - adv.mean(dim=-1, keepdim=True)

    def forward_step(self, obs: torch.Tensor, h: torch.Tensor, c: torch.Tensor
                     ) -> tuple[torch.Tensor, None, tuple[torch.Tensor, torch.Tensor]]:
        p = self.lstm._parameters
        h, c = torch.lstm_cell(self.encoder(obs), (h, c), p["weight_ih_l0"], p["weight_hh_l0"],
                               p["bias_ih_l0"], p["bias_hh_l0"])
        return self._q(h), None, (h, c)

    def forward_seq(self, obs: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor
                    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Q values of every slot of ``obs`` ``(S, L, *obs_shape)`` run from ``(h0, c0)``, and
        the state after slot ``L``."""
        s, length = obs.shape[0], obs.shape[1]
        x = self.encoder(obs.reshape(s * length, *obs.shape[2:])).reshape(s, length, -1)
        out, (hn, cn) = self.lstm(x, (h0.unsqueeze(0).contiguous(), c0.unsqueeze(0).contiguous()))
        return self._q(out), (hn[0], cn[0])

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Q values of each row as a one-step sequence from the zero state."""
        return self.forward_step(obs, *self.initial_state(obs.shape[0]))[0]
