"""One module per check. Checks never import each other; they read each other's typed facts."""
