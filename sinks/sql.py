"""SQL shared by both stores, written with %s placeholders (SQLite's ? is substituted)."""

# An anomaly is first stored open and later again with ended_at: a late or replayed "open" record
# must never reopen a closed one.
ANOMALY_UPSERT = """
INSERT INTO anomalies (home_id, device_id, kind, started_at, ended_at, score, message)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (home_id, device_id, kind, started_at) DO UPDATE SET
  ended_at = coalesce(excluded.ended_at, anomalies.ended_at),
  score = excluded.score, message = excluded.message
"""

# The generator refreshes the estimate; created_at and the homeowner's status stay.
RECOMMENDATION_UPSERT = """
INSERT INTO recommendations (home_id, kind, device_id, created_at, updated_at, title, detail,
                             kwh_per_month, money_per_month, currency)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (home_id, kind, device_id) DO UPDATE SET
  updated_at = excluded.updated_at, title = excluded.title, detail = excluded.detail,
  kwh_per_month = excluded.kwh_per_month, money_per_month = excluded.money_per_month,
  currency = excluded.currency
"""

# A redelivered acknowledgement (QoS 1) is the same answer: the first one stays.
COMMAND_ACK_INSERT = """
INSERT INTO command_acks (command_id, status, home_id, device_id, state, ts, received_at, message)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (command_id, status) DO NOTHING
"""

# A device's registry entry or its newest sighting: first_seen only ever moves earlier and
# last_seen only later (a replay of old readings must not make a device look silent), and a
# sighting without registry fields keeps them. CASE, not least()/greatest(), which SQLite lacks.
DEVICE_UPSERT = """
INSERT INTO devices (home_id, device_id, kind, source, first_seen, last_seen, vendor_id, channel, timezone)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (home_id, device_id) DO UPDATE SET
  kind = excluded.kind, source = excluded.source,
  first_seen = CASE WHEN devices.first_seen IS NULL OR excluded.first_seen < devices.first_seen
                    THEN coalesce(excluded.first_seen, devices.first_seen) ELSE devices.first_seen END,
  last_seen = CASE WHEN devices.last_seen IS NULL OR excluded.last_seen > devices.last_seen
                   THEN coalesce(excluded.last_seen, devices.last_seen) ELSE devices.last_seen END,
  vendor_id = coalesce(excluded.vendor_id, devices.vendor_id),
  channel = coalesce(excluded.channel, devices.channel),
  timezone = coalesce(excluded.timezone, devices.timezone)
"""
