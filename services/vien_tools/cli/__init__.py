"""The `vien` command line."""
