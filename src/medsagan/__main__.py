"""`python -m medsagan` and `torchrun -m medsagan`: the command line."""

from .cli import main

main()
