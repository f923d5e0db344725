"""The ``tune2serve`` command line: ``main.py`` (verbs, exit codes) and one thin module per verb in ``commands/``."""
