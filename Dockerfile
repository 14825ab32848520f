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
RUN pip install --no-cache-dir -c constraints.txt . \
    && useradd --system --uid 10001 --home /data mlledger \
    && mkdir -p /data && chown mlledger /data

USER mlledger
VOLUME ["/data"]
EXPOSE 8000
ENTRYPOINT ["mlledger"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--no-projector", "--no-runner"]
