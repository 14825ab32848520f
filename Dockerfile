# ML Ledger service image: the API, the projector and runners share it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 MLLEDGER_DATA_DIR=/data
WORKDIR /app

COPY pyproject.toml constraints.txt README.md ./
COPY domain ./domain
COPY projections ./projections
COPY service ./service
COPY mlledger ./mlledger
COPY migrations ./migrations
# bubblewrap sandboxes python pipelines on runners (README, "Sandboxing user code").
RUN apt-get update && apt-get install -y --no-install-recommends bubblewrap && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir -c constraints.txt '.[ray]' \
    && useradd --system --uid 10001 --home /data mlledger \
    && mkdir -p /data && chown mlledger /data

USER mlledger
VOLUME ["/data"]
EXPOSE 8000
ENTRYPOINT ["mlledger"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--no-projector", "--no-runner"]
