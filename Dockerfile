FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY batchq ./batchq
COPY workers ./workers
RUN pip install --no-cache-dir .
USER nobody
ENV BATCHQ_HOME=/tmp/batchq
CMD ["batchq", "worker"]
