"""netservices."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("netservices")
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0.0.0"
