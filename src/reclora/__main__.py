"""`python -m reclora`: the `reclora` command line (:func:`reclora.cli.main.main`)."""

from reclora.cli import main

main()
