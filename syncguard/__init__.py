"""syncguard: safeguarded, event-driven mailbox sync on Celery."""
