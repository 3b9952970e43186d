# The application image: `crd` (workers, the API, Flower, the CLI) with every extra installed.
# docker compose builds it; the same image runs any role via its command.
FROM python:3.11.10-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
RUN pip install -c constraints.txt '.[all]'

# The ops override point (celeryconfig.py, loaded because CELERY_CONFIG_MODULE names it) and the
# sample corpus for `docker compose run --rm cli batch examples/corpus`.
COPY celeryconfig.py ./
COPY examples ./examples
ENV CELERY_CONFIG_MODULE=/app/celeryconfig.py

RUN useradd --uid 10001 --user-group --no-create-home crd
USER crd

CMD ["crd", "worker"]
