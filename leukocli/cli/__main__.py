"""`python -m leukocli.cli`: the same as the `leuko` command."""

from . import main

main()
