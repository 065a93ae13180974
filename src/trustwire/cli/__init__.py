"""The ``trustwire`` command line.

Deployment: ``init``, ``agent``, ``serve``; messaging: ``send``, ``listen``, ``demo``;
operators: ``policy validate|check``, ``audit verify|head|tail``, ``alerts tail``
(see ``docs/OPERATIONS.md``).

The entry point is :func:`trustwire.cli.main.main`; failures end in one line on stderr
and an exit code from :class:`trustwire.cli.failure.ExitCode`.
"""
