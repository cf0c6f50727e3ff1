"""``python -m hil ...`` (what ``torchrun -m hil train ...`` launches on every rank)."""

from hil.cli import main

main()
