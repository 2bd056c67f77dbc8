"""Health metrics: recorded in batches (``recorder``), the periodic snapshot (``collect``),
trends (``trends``), Prometheus counters in Redis (``prometheus``) and broker queue depth."""

from safeguards.health_metrics.collect import collect_metrics
from safeguards.health_metrics.recorder import Metric, record_metric
from safeguards.health_metrics.trends import metric_trend

__all__ = ["Metric", "collect_metrics", "metric_trend", "record_metric"]
