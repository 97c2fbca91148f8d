"""One module per `mra-cir` subcommand; each exposes `main(argv: list[str] | None = None) -> int`."""
