"""Celery workers: background removal on the gpu queue, effects on the cpu queue."""
