"""Metric values shared by every Autoheal process, kept in the database."""

from __future__ import annotations

from django.db import models


class MetricSeries(models.Model):
    """One stored series: a counter, a histogram bucket or sum, or a "latest timestamp" gauge.

    Web and worker processes all add to the same rows in the transaction that writes the audit
    events, so ``/metrics`` shows the same numbers whichever process served the scrape, and they
    survive restarts. ``labels`` is the canonical JSON of the label set (sorted keys).
    """

    class Merge(models.TextChoices):
        SUM = "sum", "add the new value"
        MAX = "max", "keep the larger value"

    name = models.CharField(max_length=200)
    labels = models.CharField(max_length=1000, default="{}", blank=True)
    merge = models.CharField(max_length=3, choices=Merge.choices, default=Merge.SUM)
    value = models.FloatField(default=0.0)

    class Meta:
        db_table = "observability_series"
        constraints = [models.UniqueConstraint(fields=["name", "labels"], name="series_one_per_labels")]
        verbose_name_plural = "metric series"

    def __str__(self) -> str:
        return f"{self.name}{self.labels} = {self.value}"
