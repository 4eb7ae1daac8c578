"""Toy data shared by the unit tests: six short reviews, three of each class."""

from __future__ import annotations

from helpers import data

REVIEWS = ["a good movie", "the worst film", "great fun", "boring and bad", "loved it", "hated it"]


def reviews() -> data.Dataset:
    """The six reviews as a binary split, positive and negative alternating."""
    return data.dataset(REVIEWS, [1, 0, 1, 0, 1, 0], ("negative", "positive"))


def review_task(key: str = "k") -> data.TaskData:
    """A rotten_tomatoes-like task whose three splits are all `reviews`, keyed ``key``."""
    return data.TaskData(data.task_spec("rotten_tomatoes"), reviews(), reviews(), reviews(), key)
