"""Contract suites: every source kind and every backup target pass the same steps (see README of each module)."""
