"""The subcommands that run stages on a Session: each builds one and hands its chunks to a library."""
