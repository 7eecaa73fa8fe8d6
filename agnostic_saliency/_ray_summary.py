"""One summary of a Ray run, from the provenance that every batch's rows carry."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

__all__ = ["Summary"]


class Summary:
    """Adds up the provenance records of batches (each seen once, however many rows)."""

    def __init__(self) -> None:
        self.batches: dict[str, dict[str, Any]] = {}

    def add(self, records: Iterable[Any]) -> None:
        """Take a column of JSON provenance records (one per row)."""
        seen: set[str] = set()
        for text in records:
            if text in seen:
                continue
            seen.add(text)
            record = json.loads(text)
            self.batches.setdefault(record["batch"], record)

    def result(self) -> dict[str, Any]:
        """Rows, batches, rows per worker and node, method, backend, options, versions."""
        records = list(self.batches.values())
        workers: dict[str, int] = {}
        nodes: dict[str, int] = {}
        for record in records:
            worker = f"{record['host']}:{record['pid']}"
            workers[worker] = workers.get(worker, 0) + record["rows"]
            node = str(record.get("node"))
            nodes[node] = nodes.get(node, 0) + record["rows"]
        summary: dict[str, Any] = {
            "rows": sum(record["rows"] for record in records),
            "batches": len(records),
            "rows_per_worker": workers,
            "rows_per_node": nodes,
            "compute_seconds": sum(record["seconds"] for record in records),
        }
        for key in ("method", "backend", "options", "library"):
            values = {json.dumps(record[key], sort_keys=True) for record in records}
            summary[key] = json.loads(values.pop()) if len(values) == 1 else sorted(values)
        try:
            import ray

            summary["ray"] = ray.__version__
        except ImportError:  # a summary of records read back without Ray
            pass
        return summary
