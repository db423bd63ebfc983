"""E-mail alerts (issue 10): kernel changes become `Change`s (changes.py), a pure policy decides
which mails are due and when (policy.py: coalescing window, reminders, rate limit,
emailalertstatus), Jinja2 templates render them (render.py) and delivery.py sends them."""
