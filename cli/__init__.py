"""The `twinfleet` command line: the HTTP-client commands, `twinfleet up` and its wiring."""
