"""Energy-saving recommendations for one home: the state object (``recommender``), its compact
history (``history``), the evaluation window (``window``) and one module per kind (``standby``,
``peak``, ``usage``, ``shift``). The recommender's docstring defines every kind."""

from pipeline.insights.recommend.history import DAYS_PER_MONTH, QUARTER_S, is_flexible
from pipeline.insights.recommend.recommender import HomeRecommender

__all__ = ["DAYS_PER_MONTH", "QUARTER_S", "HomeRecommender", "is_flexible"]
