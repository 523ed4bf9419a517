"""`python -m leukocli`: the same as the `leuko` command."""

from .cli import main

main()
