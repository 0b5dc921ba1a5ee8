"""Asynchronous chunk execution: the control loop never waits for the policy.

The loop ticks at the task's rate and takes one action per step from a queue of future actions.
When the queue holds `threshold` actions or fewer and no query is in flight, a new chunk is
requested from this step's observation. A chunk computed from the observation of step t that
becomes usable at step t + d has its first d actions dropped (their time has passed); the rest is
merged with the queue by the strategy:

- `replace`: the new chunk takes over the queue;
- `ensemble`: every step's action is the average of all predictions made for it, weighted
  exp(-k i) with i = 0 the oldest prediction (the original's temporal ensembling weights, k = 0.01);
- `rtc` (Diffusion): the query is guided so that the new chunk's start agrees with the queued
  actions (Real-Time Chunking, policies/rtc.py), then the new chunk takes over as with `replace`.
  The query receives a guide: the queued actions and the delay expected (the last one met).

The episode's first chunk is awaited (there is nothing to play before it): the clock starts when it
arrives. A step whose action has not arrived (the queue ran dry while a query was in flight) holds
the last action and counts as a starved step, the deadline miss a robot would meet.

    executor = ChunkExecutor(chunk_size=50, threshold=25, strategy='ensemble')
    if executor.request_due:
        executor.requested()                    # the observation of this step goes to the policy
    executor.deliver(chunk, observed_at)        # whenever it arrives (step count of its observation)
    action = executor.next_action()             # (A,), then the clock advances one step

Like the chunker, it imports nothing but numpy and the standard library, and computes with the
arrays it is given (numpy, or torch tensors on the policy's device).
"""
import collections
import concurrent.futures
import time

from policies.chunker import TEMPORAL_AGG_K, ensemble_weights

STRATEGIES = ('replace', 'ensemble', 'rtc')
GUIDED = ('rtc',)  # the strategies whose queries are guided by the queue


class ChunkExecutor:
    """One episode's queue of future actions on a step clock (`t`, the step about to be played)."""

    def __init__(self, chunk_size, threshold, strategy='replace', k=TEMPORAL_AGG_K):
        if strategy not in STRATEGIES:
            raise ValueError(f"--execution must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
        if not 0 <= threshold <= chunk_size:
            raise ValueError(f'--queue_threshold must be between 0 and the chunk size {chunk_size}; got {threshold}')
        self.chunk_size, self.threshold, self.strategy, self.k = chunk_size, threshold, strategy, k
        self.reset()

    def reset(self):
        self.t = 0
        self.predictions = collections.defaultdict(list)  # step >= t -> its predicted actions, oldest first
        self.in_flight = None  # the step whose observation the pending query saw
        self.last = None  # the last action played
        self.starved_steps = 0
        self.switch_steps = []  # steps whose action came from a chunk that had just arrived
        self.dropped = 0  # actions dropped because their time had passed
        self._fresh = False

    @property
    def queued(self):
        """Actions queued for this step and the ones after it."""
        return len(self.predictions)

    @property
    def request_due(self):
        return self.in_flight is None and self.queued <= self.threshold

    def requested(self):
        """A query from this step's observation is now in flight."""
        if self.in_flight is not None:
            raise RuntimeError(f'step {self.t}: a query from step {self.in_flight} is still in flight')
        self.in_flight = self.t

    def deliver(self, chunk, observed_at):
        """Merge the chunk (K, A) predicted from the observation of step `observed_at` at this step."""
        if observed_at != self.in_flight:
            raise RuntimeError(f'a chunk from step {observed_at} arrived, but the query in flight is from '
                               f'step {self.in_flight}')
        self.in_flight = None
        late = self.t - observed_at  # its first `late` actions are for steps already played
        self.dropped += min(late, len(chunk))
        if self.strategy != 'ensemble':
            self.predictions.clear()
        for i in range(late, len(chunk)):
            self.predictions[observed_at + i].append(chunk[i])
        self._fresh = late < len(chunk)

    def queued_actions(self):
        """The actions queued for this step and the ones after it, in order: [(A,), ...]."""
        return [self._combine(self.predictions[step]) for step in sorted(self.predictions)]

    def next_action(self):
        """The action of this step (A,); the clock then advances one step."""
        t = self.t
        stored = self.predictions.pop(t, None)  # deliver() adds steps from t on: none older is left
        if stored:
            action = self._combine(stored)
            if self._fresh and t > 0:
                self.switch_steps.append(t)
        elif self.last is None:
            raise RuntimeError('ChunkExecutor: no action for the first step; deliver the first chunk before it')
        else:
            action = self.last
            self.starved_steps += 1
        self._fresh = False
        self.last = action
        self.t += 1
        return action

    def _combine(self, stored):
        if len(stored) == 1:
            return stored[0]
        weights = ensemble_weights(len(stored), self.k)
        total = stored[0] * float(weights[0])
        for prediction, weight in zip(stored[1:], weights[1:]):
            total = total + prediction * float(weight)
        return total


def default_threshold(strategy, chunk_size):
    """`ensemble`: a query whenever none is in flight (asynchronous --temporal_agg); `replace` and
    `rtc`: when half the chunk is left, as LeRobot's asynchronous inference does by default."""
    return chunk_size if strategy == 'ensemble' else chunk_size // 2


def query_guide(executor, delays, first_guess):
    """The guide a query of a GUIDED strategy receives, else None: (the queued actions [(A,), ...],
    the delay expected in steps: the last one met, `first_guess` before any); None when nothing is
    queued (the episode's first query), as there is nothing to agree with."""
    if executor.strategy not in GUIDED or not executor.queued:
        return None
    return executor.queued_actions(), delays[-1] if len(delays) > 1 else first_guess  # delays[0]: the awaited first


class DelayedPolicy:
    """A policy behind an executor, in simulated time: a query from the observation of step t is
    computed at once and becomes usable `delay(seconds)` steps later, the seconds being the query's
    measured wall time (the simulator's own time is not counted).

    query(history, guide) -> chunk (K, A), guide from query_guide; delay: seconds -> steps (a
    constant for --inference_delay D, ceil(seconds x control rate) for --realtime)."""

    def __init__(self, query, executor, delay):
        self.query, self.executor, self.delay = query, executor, delay
        self.pending = None  # (usable from step, chunk) of the query in flight (executor.in_flight)
        self.delays = []  # the delay of every query, in steps

    def reset(self):
        self.executor.reset()
        self.pending = None
        self.delays = []

    def close(self):
        """Nothing runs beside a policy in simulated time."""

    def __call__(self, history, clock=None):
        """This step's observation history -> this step's action. clock: a perf_counter-like
        function (tests pass a fake one)."""
        executor = self.executor
        self._deliver_due()  # a chunk that arrives now frees the way for the next query at once
        if self.pending is None and executor.request_due:
            executor.requested()
            now = clock or time.perf_counter
            guide = query_guide(executor, self.delays, self.delay(0.0))
            start = now()
            chunk = self.query(history, guide)
            seconds = now() - start
            steps = 0 if executor.t == 0 else self.delay(seconds)  # the first chunk is awaited
            self.delays.append(steps)
            self.pending = (executor.t + steps, chunk)
            self._deliver_due()  # a delay of 0
        return executor.next_action()

    def _deliver_due(self):
        if self.pending is not None and self.pending[0] <= self.executor.t:
            chunk, self.pending = self.pending[1], None
            self.executor.deliver(chunk, self.executor.in_flight)


class ThreadedPolicy:
    """A policy behind an executor in real time: each query runs in a worker thread beside the
    control loop (torch, onnxruntime and OpenVINO release the GIL while they compute), and its chunk
    joins the queue at the first step after it is done, its delay the steps that passed meanwhile.
    The episode's first chunk is awaited. When the queue has run dry and the query in flight has
    taken `stall_s` seconds, the loop waits for it (the robot's watchdog then holds the arms, as
    for a synchronous policy that stops answering); a query that raised raises here.

    query(history, guide) -> chunk (K, A), guide from query_guide; clock: a monotonic-seconds function."""

    def __init__(self, query, executor, stall_s=None, clock=None):
        self.query, self.executor, self.stall_s = query, executor, stall_s
        self.clock = clock or time.monotonic
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix='policy')
        self.future = None  # the query in flight
        self.started = None  # when it was submitted
        self.delays = []

    def reset(self):
        if self.future is not None:
            self.future.exception()  # waits for it to end; its chunk belongs to the last episode
        self.future = None
        self.delays = []
        self.executor.reset()

    def close(self):
        self.pool.shutdown(wait=True)

    def __call__(self, history):
        """This step's observation history -> this step's action, without waiting for the policy."""
        executor = self.executor
        self._collect()
        if self.future is None and executor.request_due:
            executor.requested()
            if executor.t == 0:  # nothing to play before the first chunk
                self.delays.append(0)
                executor.deliver(self.query(history, None), 0)
            else:
                self.started = self.clock()
                self.future = self.pool.submit(self.query, history, query_guide(executor, self.delays, 1))
        if self.future is not None and executor.queued == 0 and self.stall_s is not None \
                and self.clock() - self.started >= self.stall_s:
            self.future.result()  # stalled with nothing left to play: wait, as a synchronous loop would
            self._collect()
        return executor.next_action()

    def _collect(self):
        if self.future is None or not self.future.done():
            return
        chunk, self.future = self.future.result(), None
        observed_at = self.executor.in_flight
        self.delays.append(self.executor.t - observed_at)
        self.executor.deliver(chunk, observed_at)

