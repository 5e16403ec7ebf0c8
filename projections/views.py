"""The analysts' views, the same in every store and snapshot (docs/analysts.md).

One SQL text per view that DuckDB and Postgres both run: integer division written
out (DuckDB's `/` divides in floating point), `generate_series` over timestamps,
sums cast back to BIGINT (DuckDB sums to HUGEINT, Postgres to NUMERIC). Days are
UTC days: timestamps are stored in UTC without a zone.

Views are dropped and created with the schema (so a new definition reaches old
stores) and around a replay's swap (Postgres will not drop a table a view uses).
No statement holds a `?` (the Postgres adapter rewrites it to a placeholder).
"""

from __future__ import annotations

META_TAKEN_AT = "snapshot_taken_at"  # 'YYYY-MM-DD HH:MM:SS.mmm' (UTC) in a snapshot's meta
DAY_MS = 86_400_000


def _sum(expr: str, name: str) -> str:
    return f"CAST(coalesce(sum({expr}), 0) AS BIGINT) AS {name}"


def _by_kind(kind: str, sign: str = "") -> str:
    return f"CASE WHEN kind = '{kind}' THEN {sign}amount ELSE 0 END"


DAILY_BALANCES = """
WITH changes AS (
    SELECT account, CAST(occurred_at AS DATE) AS day, sum(amount) AS change,
           count(*) AS postings
    FROM audit_log GROUP BY account, CAST(occurred_at AS DATE)),
firsts AS (SELECT account, min(day) AS first_day FROM changes GROUP BY account),
last_day AS (SELECT max(day) AS day FROM changes),
days AS (
    SELECT f.account, CAST(g.d AS DATE) AS day
    FROM firsts f CROSS JOIN last_day l,
         generate_series(CAST(f.first_day AS TIMESTAMP), CAST(l.day AS TIMESTAMP),
                         INTERVAL '1 day') AS g(d))
SELECT d.account, d.day,
       CAST(sum(coalesce(c.change, 0)) OVER (PARTITION BY d.account ORDER BY d.day)
            AS BIGINT) AS balance,
       CAST(coalesce(c.change, 0) AS BIGINT) AS change,
       CAST(coalesce(c.postings, 0) AS BIGINT) AS postings
FROM days d LEFT JOIN changes c ON c.account = d.account AND c.day = d.day"""

USER_ACTIVITY = f"""
SELECT account, CAST(occurred_at AS DATE) AS day,
       {_sum(_by_kind('EARNED'), 'earned')},
       {_sum(_by_kind('GRANTED'), 'granted')},
       {_sum(_by_kind('SPENT', '-'), 'spent')},
       {_sum(_by_kind('JOINED', '-'), 'fees_paid')},
       {_sum(_by_kind('REVERSED'), 'reversed')},
       {_sum('amount', 'change')},
       count(*) AS postings
FROM audit_log WHERE account LIKE 'user:%'
GROUP BY account, CAST(occurred_at AS DATE)"""

ROOM_SUMMARY = f"""
WITH rooms AS (
    SELECT account AS room FROM accounts WHERE type = 'ROOM'
    UNION SELECT account FROM balances WHERE type = 'ROOM'),
totals AS (
    SELECT account AS room,
           count(CASE WHEN kind = 'JOINED' THEN 1 END) AS joins,
           {_sum(_by_kind('JOINED'), 'fees_collected')},
           {_sum(_by_kind('SPENT', '-'), 'points_spent')},
           {_sum("CASE WHEN kind IN ('EARNED', 'GRANTED') THEN amount ELSE 0 END",
                 'points_earned')},
           {_sum(_by_kind('REVERSED'), 'reversed')}
    FROM audit_log WHERE account LIKE 'room:%' GROUP BY account),
members AS (
    SELECT r.account AS room, count(DISTINCT u.account) AS members_joined
    FROM audit_log r JOIN audit_log u ON u.event_id = r.event_id
    WHERE r.kind = 'JOINED' AND u.kind = 'JOINED' AND r.account LIKE 'room:%'
          AND u.account LIKE 'user:%'
    GROUP BY r.account)
SELECT rooms.room,
       coalesce(m.members_joined, 0) AS members_joined,
       coalesce(t.joins, 0) AS joins,
       coalesce(t.fees_collected, 0) AS fees_collected,
       coalesce(t.points_spent, 0) AS points_spent,
       coalesce(t.points_earned, 0) AS points_earned,
       coalesce(t.reversed, 0) AS reversed,
       coalesce(b.balance, 0) AS balance
FROM rooms LEFT JOIN totals t ON t.room = rooms.room
     LEFT JOIN members m ON m.room = rooms.room
     LEFT JOIN balances b ON b.account = rooms.room"""


def _epoch_ms_to_timestamp(ms: str) -> str:
    """A BIGINT of epoch milliseconds as a TIMESTAMP, in SQL both stores run."""
    days = f"CAST(({ms} - {ms} % {DAY_MS}) / {DAY_MS} AS INTEGER)"
    rest = f"CAST({ms} % {DAY_MS} AS INTEGER)"
    return (f"TIMESTAMP '1970-01-01' + {days} * INTERVAL '1 day' "
            f"+ {rest} * INTERVAL '1 millisecond'")


LEDGER_FRESHNESS = f"""
WITH last_events AS (
    SELECT topic, "partition", max(occurred_at) AS last_event_at, max("offset") AS last_offset
    FROM audit_log GROUP BY topic, "partition"),
meta AS (
    SELECT max(CAST(CASE WHEN key = 'as_of' THEN value END AS BIGINT)) AS as_of_ms,
           max(CASE WHEN key = '{META_TAKEN_AT}' THEN value END) AS taken_at
    FROM projection_meta)
SELECT p.topic, p."partition", p.next_offset, e.last_offset, e.last_event_at,
       {_epoch_ms_to_timestamp('meta.as_of_ms')} AS as_of,
       CAST(meta.taken_at AS TIMESTAMP) AS snapshot_taken_at
FROM projection_positions p
     LEFT JOIN last_events e ON e.topic = p.topic AND e."partition" = p."partition"
     CROSS JOIN meta"""

VIEWS: dict[str, str] = {
    "daily_balances": DAILY_BALANCES,
    "room_summary": ROOM_SUMMARY,
    "user_activity": USER_ACTIVITY,
    "ledger_freshness": LEDGER_FRESHNESS,
}


def drop_views() -> list[str]:
    return [f"DROP VIEW IF EXISTS {name}" for name in VIEWS]


def create_views() -> list[str]:
    """Statements that (re)create every view; run them in one transaction."""
    return [*drop_views(), *(f"CREATE VIEW {name} AS {sql}" for name, sql in VIEWS.items())]
