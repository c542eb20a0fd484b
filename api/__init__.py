"""The HTTP API: a Flask app factory in the style of Flask's Celery example."""

from api.app import create_app

__all__ = ["create_app"]
