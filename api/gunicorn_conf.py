"""gunicorn settings for the API: `gunicorn -c api/gunicorn_conf.py 'api:create_app()'`.

gevent workers hold thousands of open Server-Sent-Event streams on a few
processes, each stream a cheap greenlet waiting on Redis, so long-lived
subscribers never starve short requests (a sync or gthread worker would
give each stream a whole thread or process).
"""

import multiprocessing

from shared.settings import Settings

_settings = Settings.from_env()
bind = _settings.bind
worker_class = "gevent"
workers = _settings.api_workers or min(4, multiprocessing.cpu_count())
worker_connections = _settings.api_connections
# Streams stay open far longer than any request; gevent workers heartbeat on their own.
timeout = 120
graceful_timeout = 30
keepalive = 5
accesslog = "-"
access_log_format = '{"route": "%(U)s", "method": "%(m)s", "status": %(s)s, "ms": %(M)s}'
