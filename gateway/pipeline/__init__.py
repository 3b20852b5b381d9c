"""Which check runs when, how checks run, and how their results become a verdict."""
