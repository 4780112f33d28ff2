"""One module per `ecgsearch` subcommand; see `search/cli.py` for the contract."""
