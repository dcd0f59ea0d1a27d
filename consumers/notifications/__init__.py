"""E-mail notifications, one feature slice: `settings` (NotifySettings, VEC_NOTIFY_*),
`mail` (its tables, the log consumer, the SMTP sender and their loop). Its commands are
`vec notify …` (entrypoints/cli.py); registered in consumers/features.py.

Kept empty: reading the settings must not load the sender's code."""
