"""The one action chunker: a policy's action chunks -> one action per control step, without torch.

Simulation evaluation, real-robot evaluation and the torch-free runtime (deploy/runtime.py) all
play chunks through `ActionChunker`: a query every `action_horizon` steps whose chunk is played
step by step, or with temporal ensembling a query every step and the weighted average of every
stored prediction for this step (weights exp(-k i), i = 0 the oldest, k = TEMPORAL_AGG_K). A
policy that takes `obs_horizon` To > 1 observations gets the last To, the first one repeated at
the start of the episode, as in training.

The chunker computes with the arrays it is given and imports neither torch nor anything else:
numpy arrays in the runtime, torch tensors on the policy's device in evaluation, where the
ensembling is then the original's torch arithmetic to the bit.
"""
import collections

import numpy as np

TEMPORAL_AGG_K = 0.01  # ensembling weight exp(-k * i), i = 0 for the oldest prediction (the original's k)


class NonFiniteAction(ValueError):
    """A policy gave a NaN or infinite action, which is never sent (the message names the step)."""


def checked_action(action, step):
    """action (A,) numpy in robot units -> itself, or NonFiniteAction naming the step and the first bad value."""
    bad = np.flatnonzero(~np.isfinite(action))
    if len(bad):
        raise NonFiniteAction(f'step {step}: the policy\'s action holds non-finite values ({action[bad[0]]} at '
                              f'index {bad[0]}, {len(bad)} of {len(action)}); not sent')
    return action


class TemporalEnsembler:
    """Temporal ensembling of action chunks, in memory that grows with the chunk size only.

    Call it once per control step with the chunk predicted at that step. It returns the weighted
    average of every stored prediction for the current step, weights exp(-k * i) with i = 0 for the
    oldest prediction, normalised to sum 1 -- exactly the original's average over its
    [episode_len, episode_len + chunk_size, action_dim] buffer, from a ring buffer of the last
    chunk_size chunks.
    """

    def __init__(self, chunk_size, k=TEMPORAL_AGG_K):
        self.chunk_size = chunk_size
        self.k = k
        self.chunks = None  # (K, K, A) ring of the last K chunks, of the first chunk's kind of array
        self.t = 0

    def reset(self):
        self.t = 0  # the ring's rows are read only after this episode wrote them

    def __call__(self, chunk):
        """chunk (K, A) predicted at the current step (numpy or torch) -> action (A,) float64 of its kind."""
        K, t = self.chunk_size, self.t
        if self.chunks is None:
            self.chunks = chunk[None][[0] * K]  # (K, K, A), same kind, dtype and device as chunk
        self.chunks[t % K] = chunk
        query_steps = np.arange(max(0, t - K + 1), t + 1)  # oldest first
        predictions = self.chunks[query_steps % K, t - query_steps]  # (n, A)
        # NOTE(faithful): the original found the filled rows of its zero-initialised buffer by
        # testing for non-zero values, so a prediction with any component exactly 0.0 is left out.
        predictions = predictions[(predictions != 0).all(axis=1)]
        weights = ensemble_weights(len(predictions), self.k)
        self.t += 1
        return (predictions * _as_kind(weights, predictions)[:, None]).sum(axis=0)  # (A,) float64


def ensemble_weights(count, k=TEMPORAL_AGG_K):
    """The original's temporal ensembling weights of `count` predictions of one step, oldest first:
    exp(-k * i), normalised to sum 1 -> (count,) float64. Every ensembling here uses them."""
    weights = np.exp(-k * np.arange(count))
    return weights / weights.sum()


def _as_kind(values, like):
    """float64 numpy values as an array of like's kind: numpy, or a float64 torch tensor on like's device."""
    if isinstance(like, np.ndarray):
        return values
    return like.new_tensor(values, dtype=like.double().dtype)


class ObservationHistory:
    """The last `obs_horizon` observations of an episode, oldest first; at the start of the episode
    the first one is repeated, as in training."""

    def __init__(self, obs_horizon):
        self.history = collections.deque(maxlen=obs_horizon)

    def clear(self):
        self.history.clear()

    def observe(self, observation):
        """This step's observation -> the last obs_horizon ones, oldest first."""
        while len(self.history) < self.history.maxlen - 1:
            self.history.append(observation)
        self.history.append(observation)
        return list(self.history)


class ActionChunker:
    """When to query the policy and which action to play at each step of an episode.

        history = chunker.observe(observation)     # the last obs_horizon observations, oldest first
        chunk = query(history) if chunker.query_due else None
        action = chunker.play(chunk)               # (A,), in the chunk's units and kind of array
    """

    def __init__(self, chunk_size, action_horizon, temporal_agg=False, obs_horizon=1, k=TEMPORAL_AGG_K):
        self.query_frequency = 1 if temporal_agg else action_horizon
        self.ensembler = TemporalEnsembler(chunk_size, k) if temporal_agg else None
        self.history = ObservationHistory(obs_horizon)
        self.reset()

    def reset(self):
        """A new episode: forget the chunk, the ensembled predictions and the observation history."""
        self.t = 0
        self.chunk = None
        self.history.clear()
        if self.ensembler is not None:
            self.ensembler.reset()

    def observe(self, observation):
        """This step's observation -> the last obs_horizon ones, oldest first (the first repeated)."""
        return self.history.observe(observation)

    @property
    def query_due(self):
        """Whether this step needs a new chunk."""
        return self.t % self.query_frequency == 0

    def play(self, chunk=None):
        """The action of this step (A,); chunk (K, A): the one queried at this step, when due."""
        if chunk is not None:
            self.chunk = chunk
        if self.chunk is None:
            raise RuntimeError('ActionChunker.play: no chunk yet; query the policy at the first step')
        t = self.t
        self.t += 1
        if self.ensembler is not None:
            return self.ensembler(self.chunk)
        return self.chunk[t % self.query_frequency]
