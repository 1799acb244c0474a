"""Data contracts: Great Expectations suites (JSON, in ``suites/``) and the code that applies them.

Great Expectations is imported lazily (about 3-4 s), on the first validation.
"""

from data_contracts.breach import ContractBreach

__all__ = ["ContractBreach", "validate_dir"]


def validate_dir(*args, **kwargs):
    """See :func:`data_contracts.validate.validate_dir`."""
    from data_contracts.validate import validate_dir as _validate_dir

    return _validate_dir(*args, **kwargs)
