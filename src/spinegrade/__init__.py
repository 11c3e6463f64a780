"""spinegrade."""
