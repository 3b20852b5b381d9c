"""I/O clients the checks use: DNS (dns.py) and the virus scanner."""
