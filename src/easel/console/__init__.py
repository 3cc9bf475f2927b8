"""The web console: server-rendered pages under /console/ for people (sign-up, keys, usage,
playground, history, webhooks) and for the operator (admin pages). Jinja2 templates, htmx and
one stylesheet, all served from this package; sessions live in the database (accounts/sessions)."""
