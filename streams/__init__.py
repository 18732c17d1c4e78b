"""The stream processor: Faust agents and tables around plain batch-processing functions."""

from streams.pipeline import BatchOutcome, process_batch
from streams.validation import registry_entry

__all__ = ["BatchOutcome", "create_app", "process_batch", "registry_entry"]


def __getattr__(name: str) -> object:
    # Faust is imported only by the process that runs the worker.
    if name == "create_app":
        from streams.app import create_app

        return create_app
    raise AttributeError(name)
