"""spinegrade: lumbar spine degeneration grading from MRI (RSNA 2024 LSDC): localise, then grade."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("spinegrade")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
