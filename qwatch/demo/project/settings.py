"""Django settings for a demo cluster; each value comes from the demo's environment."""

import os

SECRET_KEY = os.environ["QWATCH_DEMO_SECRET_KEY"]
INSTALLED_APPS = ["django_q"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["QWATCH_DEMO_DB"],
        # The cluster's monitor and scheduler share the file; wait rather than fail.
        "OPTIONS": {"timeout": 20},
    }
}
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
Q_CLUSTER = {
    "name": os.environ.get("QWATCH_DEMO_SITE", "demo"),
    "workers": int(os.environ.get("QWATCH_DEMO_WORKERS", "2")),
    "queue_limit": int(os.environ.get("QWATCH_DEMO_QUEUE_LIMIT", "4")),
    "redis": os.environ.get("QWATCH_DEMO_REDIS", "redis://127.0.0.1:6379/0"),
    "timeout": 10,  # the longest demo task naps 1.4 s; this bounds a stop, too
    "retry": 60,
    "max_attempts": 1,
    "catch_up": False,
    # Successes are not worth a write each; the demo is about the clusters, not results.
    "save_limit": -1,
    "log_level": os.environ.get("QWATCH_DEMO_LOG_LEVEL", "WARNING"),
}
