"""Checks of the values a file gives (config.json, policy.json, info.json, a LeRobot config.json):
small predicates, and the one way a reader refuses a bad value, naming the file."""
import math


def is_positive_int(value, limit=None):
    """A whole number above 0 (and at most `limit`); bools are not numbers here."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0 and (limit is None or value <= limit)


def is_positive_ints(value, count):
    """A list of `count` positive whole numbers, such as an image size [H, W]."""
    return isinstance(value, list) and len(value) == count and all(map(is_positive_int, value))


def is_name_list(value):
    """A non-empty list of names (strings), such as camera names."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def check_values(obj, path, problem_of, error, advice=''):
    """obj, or `error` naming the file `path` and the first problem that problem_of(obj) finds."""
    problem = problem_of(obj)
    if problem:
        raise error(f'{path}: {problem}{advice}')
    return obj


def is_finite_number(value):
    """An int or float that is neither NaN nor infinite; bools are not numbers here."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
