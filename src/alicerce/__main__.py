"""`python -m alicerce` runs the CLI."""

from alicerce.cli import main

main()
