"""An OpenAI Batch API script, unchanged but for `base_url` and the key: upload a file of chat-completion
requests to irq, run it as a batch, print the results. Run: IRQ_API_KEY=… python examples/openai_batch.py"""

import json
import os
import sys
import time

from openai import OpenAI

client = OpenAI(base_url=os.environ.get("IRQ_OPENAI_URL", "http://127.0.0.1:8000/openai/v1"),
                api_key=os.environ["IRQ_API_KEY"])  # fmt: skip
print("models:", [m.id for m in client.models.list()])
path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "openai-batch.jsonl")
uploaded = client.files.create(file=open(path, "rb"), purpose="batch")
print("file:", uploaded.id, uploaded.bytes, "bytes")
batch = client.batches.create(
    input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
)
while batch.status not in ("completed", "failed", "cancelled", "expired"):
    time.sleep(2)
    batch = client.batches.retrieve(batch.id)
print("batch:", batch.id, batch.status, batch.request_counts)
for line in client.files.content(batch.output_file_id).text.splitlines():
    result = json.loads(line)
    print(result["custom_id"], result["response"]["body"]["choices"][0]["message"]["content"])
