"""The wiring: everything that puts the components together, above all of them.

The ``cityvitals`` command line (:mod:`wiring.cli` and its ``cli_*`` command groups), the
service runners (:mod:`wiring.services`), the local stack launcher (:mod:`wiring.localstack`
on :mod:`wiring.servers` and :mod:`wiring.stack`) and the simulated city (:mod:`wiring.simulate`). Nothing below imports
this package: the kernel (``cityvitals``) imports no component, the components import the kernel
and ``rules``.
"""
