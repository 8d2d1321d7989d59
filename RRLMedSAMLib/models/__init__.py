"""Networks, one box of the method per file (see docs/method.md)."""
