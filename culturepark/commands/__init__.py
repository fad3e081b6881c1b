"""One module per CLI stage: each `register`s its subcommand(s) next to the code that runs them."""
