"""One module per `stapes` subcommand (see `stapes.cli` for the protocol)."""
