"""SMTP front end: aiosmtpd session, policy handler, replies, header stamps."""
