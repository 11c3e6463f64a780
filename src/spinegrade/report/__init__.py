"""Reports: figures and self-contained offline HTML pages (dataset inspection, evaluation,
overlays, study reports). Nothing here decides anything: it draws what the layers below computed."""
