"""``python -m cli ...`` (also what ``torchrun -m cli train ...`` runs)."""

from .app import main

main()
