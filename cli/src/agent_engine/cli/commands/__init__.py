"""agentctl's commands, one module per concern; each module's `register(subparsers)` adds its commands,
their arguments and handlers (`func`). main.py wires them in the order `agentctl --help` lists them."""
