"""Reports: dataset inspection (EDA), figures and self-contained offline HTML pages."""

from spinegrade.report.inspect import InspectResult, inspect_dataset

__all__ = ["InspectResult", "inspect_dataset"]
