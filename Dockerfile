# One image for every syncguard process; docker-compose.yml picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    SYNCGUARD_ENVIRONMENT=production

WORKDIR /app
COPY pyproject.toml ./
COPY celeryconfig.py beat_schedule.py ./
COPY syncguard/ syncguard/
COPY tasks/ tasks/
COPY safeguards/ safeguards/
COPY models/ models/
COPY migrations/ migrations/
COPY providers/ providers/
COPY api/ api/
RUN pip install .

# Celery refuses nothing as root, but a worker has no business being root; beat writes its
# schedule file into /app/var.
RUN useradd --create-home --uid 10001 syncguard && mkdir -p /app/var && chown syncguard /app/var
USER syncguard

CMD ["celery", "-A", "tasks", "worker", "-l", "info"]
