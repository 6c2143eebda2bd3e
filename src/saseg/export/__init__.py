"""Export the labelling queue to annotation tools, in priority order, with pre-annotations.

`export_queue` dispatches through `EXPORTERS` (`registry.py`) to `export_labelstudio`,
`export_cvat` or `export_fiftyone`; each writes an ``IMPORT.md`` into the out dir with the
import steps; `check_export` re-reads an export as the tool will.
"""

from .cvat import export_cvat
from .fiftyone import export_fiftyone, load_fiftyone
from .labelstudio import export_labelstudio
from .queue import read_plan
from .registry import (EXPORTERS, Exporter, check_export, detect_tool, export_queue, exporter,
                       register_exporter)

__all__ = ["EXPORTERS", "Exporter", "register_exporter", "exporter", "detect_tool", "export_queue", "check_export",
           "export_labelstudio", "export_cvat", "export_fiftyone", "load_fiftyone", "read_plan"]
