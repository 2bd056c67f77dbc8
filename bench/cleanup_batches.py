"""Per-batch timings of the retention delete by batch size: ``python bench/cleanup_batches.py``.

Runs against DATABASE_URL (default: the embedded development database). Inserts ``--rows``
delivery-log rows tagged ``bench-cleanup``, 1 to 40 days old interleaved (33 in 40 past the 7-day
retention), deletes the old ones through ``apply_policy`` with a bench-only policy, and prints
the batch distribution. Each batch size writes one ``cleanup_audit_log`` row.
"""

from __future__ import annotations

import argparse
import statistics

from sqlalchemy import text

from safeguards.cleanup import RetentionPolicy, Rule, apply_policy
from syncguard.db import get_engine
from syncguard.settings import get_settings

BENCH = RetentionPolicy(
    "webhook_delivery_log",
    (Rule("webhook_type = 'bench-cleanup' AND success AND created_at < :cutoff", lambda s: 7),),
)


def main() -> None:
    """Insert, delete in batches, print the figures, for each batch size."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1_000, 5_000, 20_000])
    args = parser.parse_args()
    engine = get_engine()
    for batch_size in args.batch_sizes:
        with engine.begin() as conn:
            now = conn.execute(text("SELECT now()")).scalar_one()
            conn.execute(
                text(
                    "INSERT INTO webhook_delivery_log (webhook_type, success, created_at)"
                    " SELECT 'bench-cleanup', true, :now - make_interval(days => 1 + i % 40)"
                    " FROM generate_series(1, :n) AS i"
                ),
                {"now": now, "n": args.rows},
            )
        settings = get_settings().model_copy(
            update={"cleanup_batch_size": batch_size, "cleanup_max_seconds_per_table": 600.0,
                    "cleanup_max_batches": 100_000}
        )  # fmt: skip
        result = apply_policy(BENCH, now=now, settings=settings)
        ms = sorted(result.batch_ms)
        print(
            f"batch {batch_size:>6}: {result.rows_deleted} rows in {len(ms)} batches,"
            f" p50 {statistics.median(ms):.1f} ms, p95 {ms[int(len(ms) * 0.95) - 1]:.1f} ms,"
            f" max {ms[-1]:.1f} ms, first {result.batch_ms[0]:.1f} ms,"
            f" last {result.batch_ms[-1]:.1f} ms, total {result.duration_ms} ms"
        )
        with engine.begin() as conn:
            conn.execute(
                text("DELETE FROM webhook_delivery_log WHERE webhook_type = 'bench-cleanup'")
            )


if __name__ == "__main__":
    main()
