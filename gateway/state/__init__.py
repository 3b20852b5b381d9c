"""Short-lived state shared by the sessions of one host (embedded SQLite) or, later, of several
MX hosts (Redis, issue 24). Each kind of state is a small Protocol here with one embedded
implementation; a Redis one implements the same Protocol."""
