"""`python -m authsvc` runs the command line."""

from authsvc.cli import main

main()
