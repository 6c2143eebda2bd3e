"""Audit folders (``saseg audit``): the one place that spells their file names::

    AUDIT/sample.csv          frame_id, frame_index, source, pi, uncertainty (one row per sampled frame)
    AUDIT/plan.csv            the same frames as a labelling queue (`PlanDir.QUEUE`, for `saseg export`)
    AUDIT/audit_sample.json   n, pool size, seed, mix, predictor, the pool's frame-id hash
    ESTIMATE/audit.json       the summary and its sentence
    ESTIMATE/classes.csv      per class: PPI++ and labels-only estimates and intervals, ...
    ESTIMATE/widths.csv, widths.png   interval width against n
    RUN/audit/                where a run keeps its audit by convention (the report looks there)
"""

SAMPLE_CSV, SAMPLE_JSON = "sample.csv", "audit_sample.json"
ESTIMATE_JSON, CLASSES_CSV, WIDTHS_CSV, WIDTHS_PNG = "audit.json", "classes.csv", "widths.csv", "widths.png"
AUDIT_DIR = "audit"

__all__ = ["SAMPLE_CSV", "SAMPLE_JSON", "ESTIMATE_JSON", "CLASSES_CSV", "WIDTHS_CSV", "WIDTHS_PNG", "AUDIT_DIR"]
