"""LeRobot's dataset statistics: per feature min, max, mean, std, count and quantiles, per episode
and aggregated over a dataset (meta/stats.json), images subsampled, computed as LeRobot 0.6.1 computes
them (its compute_stats): per episode one pass of its running statistics in the stored values'
precision (float32 at least), the quantiles read off a 5,000-bin histogram between the episode's
minimum and maximum; over the dataset, means and quantiles weighted by each episode's count and the
variance pooled."""
import numpy as np

from formats.lerobot import QUANTILES, STATS_IMAGE_SIDE, STATS_SAMPLES

QUANTILE_BINS = 5000  # histogram bins of the per-episode quantiles
EDGE_PADDING = 1e-10  # the histogram's range reaches this far beyond the minimum and maximum


def feature_stats(values, count=None):
    """LeRobot's statistics of (N, D) values over N: min, max, mean, std (population), count and the
    QUANTILES (below 2 samples: numpy's mean and std, the mean in the quantiles' place)."""
    values = np.asarray(values)
    values = values.astype(np.result_type(values.dtype, np.float32), copy=False)  # (N, D)
    count = np.array([len(values) if count is None else count])
    if len(values) < 2:
        stats = {'min': values.min(axis=0), 'max': values.max(axis=0), 'mean': values.mean(axis=0),
                 'std': values.std(axis=0), 'count': count}
        return {**stats, **{quantile_key(q): stats['mean'].copy() for q in QUANTILES}}
    mean, mean_of_squares = values.mean(axis=0), (values ** 2).mean(axis=0)
    low, high = values.min(axis=0), values.max(axis=0)
    stats = {'min': low, 'max': high, 'mean': mean, 'std': np.sqrt(np.maximum(0, mean_of_squares - mean ** 2)),
             'count': count}
    edges = [np.linspace(low[i] - EDGE_PADDING, high[i] + EDGE_PADDING, QUANTILE_BINS + 1)
             for i in range(values.shape[1])]
    cumulative = [np.cumsum(np.histogram(values[:, i], bins=edges[i])[0]) for i in range(values.shape[1])]
    for q in QUANTILES:
        stats[quantile_key(q)] = np.array([histogram_quantile(c, e, q * len(values))
                                           for c, e in zip(cumulative, edges)])
    return stats


def histogram_quantile(cumulative, edges, target):
    """The value below which `target` of the counted values lie, interpolated within its bin
    (cumulative: the histogram's running counts; edges: its bin edges)."""
    i = int(np.searchsorted(cumulative, target))
    if i == 0:
        return edges[0]
    if i >= len(cumulative):
        return edges[-1]
    before, inside = cumulative[i - 1], cumulative[i] - cumulative[i - 1]
    if inside == 0:
        return edges[i]
    return edges[i] + (target - before) / inside * (edges[i + 1] - edges[i])


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
    """Dataset statistics from per-episode ones, as LeRobot 0.6.1 aggregates them: count-weighted means
    and quantiles, the pooled variance, the least minimum and the greatest maximum."""
    out = {}
    for feature in per_episode[0]:
        stats = [s[feature] for s in per_episode]
        counts = np.stack([s['count'] for s in stats])  # (E, 1)
        total = counts.sum(axis=0)  # (1,)
        means = np.stack([s['mean'] for s in stats])
        weights = counts.reshape(-1, *([1] * (means.ndim - 1)))

        def weighted(values):
            return (values * weights).sum(axis=0) / total
        mean = weighted(means)
        variance = weighted(np.stack([s['std'] for s in stats]) ** 2 + (means - mean) ** 2)
        merged = {'min': np.min([s['min'] for s in stats], axis=0), 'max': np.max([s['max'] for s in stats], axis=0),
                  'mean': mean, 'std': np.sqrt(variance), 'count': total}
        merged.update({quantile_key(q): weighted(np.stack([s[quantile_key(q)] for s in stats])) for q in QUANTILES})
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
