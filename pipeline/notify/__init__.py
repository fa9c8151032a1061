"""Notifications: what a homeowner is told (``notices``), when (``quiet``), and how a target is
shown (``targets``). Pure: sending (Apprise) and the store are at the edge
(``pipeline/tools/notifier.py``, ``ui/notifications.py``)."""
