"""The ``trustwire`` command line: ``init``, ``agent``, ``serve``, ``send``, ``listen``, ``demo``.

The entry point is :func:`trustwire.cli.main.main`; failures end in one line on stderr
and an exit code from :class:`trustwire.cli.failure.ExitCode`.
"""
