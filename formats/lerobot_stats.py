"""LeRobot's dataset statistics: per feature min, max, mean, std, count and quantiles, per episode
and aggregated over a dataset (meta/stats.json), images subsampled as LeRobot does."""
import numpy as np

from formats.lerobot import QUANTILES, STATS_IMAGE_SIDE, STATS_SAMPLES


def feature_stats(values, count=None):
    """LeRobot's statistics of (N, D) values over N: min, max, mean, std (population), count and
    the QUANTILES (the mean in their place below 2 samples)."""
    values = np.asarray(values, dtype=np.float64)
    stats = {'min': values.min(axis=0), 'max': values.max(axis=0), 'mean': values.mean(axis=0),
             'std': values.std(axis=0), 'count': np.array([len(values) if count is None else count])}
    for q in QUANTILES:
        stats[quantile_key(q)] = np.quantile(values, q, axis=0) if len(values) > 1 else stats['mean'].copy()
    return stats


def quantile_key(q):
    return f'q{round(q * 100):02d}'


def sample_steps(length):
    """The frames LeRobot samples from an episode of `length` for image statistics."""
    low, high, power = STATS_SAMPLES
    count = max(min(low, length), min(int(length ** power), high))
    return np.round(np.linspace(0, length - 1, count)).astype(int)


def image_stats(frames):
    """Per-channel statistics of sampled frames (T, H, W, 3) uint8, in [0, 1], each (3, 1, 1)."""
    sampled = frames[sample_steps(len(frames))]
    target, threshold = STATS_IMAGE_SIDE
    h, w = sampled.shape[1:3]
    if max(h, w) >= threshold:
        step = int(max(h, w) / target)
        sampled = sampled[:, ::step, ::step]
    stats = feature_stats(sampled.reshape(-1, 3), count=len(sampled))
    return {k: v if k == 'count' else (v / 255.0).reshape(3, 1, 1) for k, v in stats.items()}


def aggregate_stats(per_episode):
    """Dataset statistics from per-episode ones, as LeRobot aggregates them: count-weighted mean and
    pooled variance, min of minima, max of maxima, and for each quantile the envelope (the least of
    the lower quantiles, the greatest of the upper)."""
    out = {}
    for feature in per_episode[0]:
        stats = [s[feature] for s in per_episode]
        counts = np.array([s['count'][0] for s in stats], dtype=np.float64)
        means = np.stack([s['mean'] for s in stats])
        weights = counts.reshape(-1, *([1] * (means.ndim - 1)))
        mean = (means * weights).sum(axis=0) / counts.sum()
        spread = np.stack([s['std'] for s in stats]) ** 2 + (means - mean) ** 2
        variance = (spread * weights).sum(axis=0) / counts.sum()
        merged = {'min': np.min([s['min'] for s in stats], axis=0), 'max': np.max([s['max'] for s in stats], axis=0),
                  'mean': mean, 'std': np.sqrt(variance), 'count': np.array([int(counts.sum())])}
        for q in QUANTILES:
            values = np.stack([s[quantile_key(q)] for s in stats])
            merged[quantile_key(q)] = values.min(axis=0) if q <= 0.5 else values.max(axis=0)
        out[feature] = merged
    return out


def stats_to_json(stats):
    return {feature: {k: np.asarray(v).tolist() for k, v in values.items()} for feature, values in stats.items()}


def stats_from_row(row):
    """Per-episode statistics from an episode metadata row's stats/<feature>/<stat> columns."""
    stats = {}
    for column, value in row.items():
        if column.startswith('stats/') and value is not None:
            feature, stat = column[len('stats/'):].rsplit('/', 1)
            stats.setdefault(feature, {})[stat] = np.asarray(value, dtype=np.int64 if stat == 'count' else np.float64)
    return stats
