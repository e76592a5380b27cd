"""l4p: modular multi-task plugin framework for low-level 4D perception."""
