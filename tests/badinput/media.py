"""Runner for ``media/`` cases: the same as ``tables/`` (break a copy of the demo folder's media or its paths,
run `sail validate`, check the message and that the quarantine holds exactly the item and its dependents)."""

from tests.badinput.tables import run  # noqa: F401
