"""``python -m trustwire.cli``: the same as the ``trustwire`` command."""

from trustwire.cli.main import main

main()
