"""Signed webhooks on task ends, one feature slice: `settings` (WebhookSettings, VEC_WEBHOOK_*),
`delivery` (its tables, the log consumer, the sender and their loop, its figures for
/metrics). Its HTTP routes are the API's (entrypoints/api/routes_webhooks.py): entry points
import the feature, never the other way. Registered in consumers/features.py.

Kept empty: reading the settings must not load the sender's code."""
